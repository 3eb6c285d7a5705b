"""RequestBudget against the real Redis (the test database, MIRAGE_TEST_REDIS_URL)."""

import threading
import uuid

import pytest
import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

from documents.embeddings.base import TransientEmbeddingError
from documents.embeddings.ratelimit import RequestBudget

WINDOW_SECONDS = 0.5


@pytest.fixture
def key(redis_client):
    name = f"test:embed-budget:{uuid.uuid4().hex}"
    yield name
    redis_client.delete(name)


def test_two_budgets_sharing_a_key_respect_one_limit(redis_client, key):
    first = RequestBudget(redis_client, key, 3, window_seconds=WINDOW_SECONDS)
    second = RequestBudget(redis_client, key, 3, window_seconds=WINDOW_SECONDS)
    granted = [budget.acquire(timeout=0) for budget in (first, second, first, second, first)]
    assert granted == [True, True, True, False, False]


def grant_times(redis_client, key) -> dict[bytes, float]:
    """Each granted request and when (the Redis server's clock, in µs)."""
    return dict(redis_client.zrange(key, 0, -1, withscores=True))


def test_a_slot_frees_up_when_the_window_slides(redis_client, key):
    budget = RequestBudget(redis_client, key, 2, window_seconds=WINDOW_SECONDS)
    assert budget.acquire(timeout=0) and budget.acquire(timeout=0)
    assert budget.acquire(timeout=0) is False
    first_two = grant_times(redis_client, key)
    # A generous deadline: the slot frees up after one window.
    assert budget.acquire(timeout=30) is True
    granted = grant_times(redis_client, key)
    (third,) = set(granted) - set(first_two)
    # Never more than two grants in any window: the third waited until the
    # first had left it.
    assert granted[third] - min(first_two.values()) >= WINDOW_SECONDS * 1_000_000
    # The second grant may have left the window too when the machine was slow
    # to wake the waiter; never are there more than two.
    assert third in granted and len(granted) <= 2


def test_acquire_gives_up_after_its_timeout(redis_client, key):
    budget = RequestBudget(redis_client, key, 1, window_seconds=60)
    assert budget.acquire(timeout=0) is True
    assert budget.acquire(timeout=0.2) is False
    assert redis_client.zcard(key) == 1


def test_budget_key_expires_once_idle(redis_client, key):
    RequestBudget(redis_client, key, 5, window_seconds=WINDOW_SECONDS).acquire(timeout=0)
    assert 0 < redis_client.pttl(key) <= WINDOW_SECONDS * 1000 + 1000


def unreachable_redis() -> redis.Redis:
    return redis.Redis(
        host="127.0.0.1",
        port=1,
        socket_connect_timeout=0.1,
        retry=Retry(NoBackoff(), 0),
    )


def test_zero_requests_per_minute_is_unlimited_and_never_touches_redis(key):
    unreachable = unreachable_redis()
    budget = RequestBudget(unreachable, key, 0)
    assert all(budget.acquire(timeout=0) for _ in range(100))


def test_an_unreachable_redis_is_a_transient_error(key):
    unreachable = unreachable_redis()
    with pytest.raises(TransientEmbeddingError, match="request budget unavailable"):
        RequestBudget(unreachable, key, 5).acquire(timeout=0)


def test_racing_workers_never_exceed_the_limit(redis_client, key):
    granted: list[bool] = []

    def worker() -> None:
        client = redis.Redis.from_url(settings.MIRAGE_REDIS_URL)
        budget = RequestBudget(client, key, 10, window_seconds=5)
        granted.extend(budget.acquire(timeout=0) for _ in range(5))
        client.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert granted.count(True) == 10
    assert len(granted) == 40
