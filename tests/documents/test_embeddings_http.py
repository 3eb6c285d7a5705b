from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from documents.embeddings.base import (
    PermanentEmbeddingError,
    TransientEmbeddingError,
    estimate_tokens,
    truncate_to_estimate,
)
from documents.embeddings.http import (
    JsonHttpClient,
    parse_retry_after,
    request_slices,
    validate_vectors,
    with_retries,
)
from tests.support.http_servers import FakeEmbeddingServer, Reply

pytestmark = pytest.mark.unit


@pytest.fixture
def server():
    with FakeEmbeddingServer(dimensions=4) as running:
        yield running


class Flaky:
    """Fails with the given errors in turn, then returns "done"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "done"


def test_with_retries_returns_after_transient_failures():
    delays: list[float] = []
    fn = Flaky(TransientEmbeddingError("blip"), TransientEmbeddingError("blip"))
    assert with_retries(fn, attempts=3, base_delay=0.5, max_delay=10, sleep=delays.append) == "done"
    assert fn.calls == 3
    assert len(delays) == 2


def test_with_retries_gives_up_after_the_last_attempt_with_the_last_error():
    delays: list[float] = []
    fn = Flaky(*(TransientEmbeddingError(f"blip {n}") for n in range(5)))
    with pytest.raises(TransientEmbeddingError, match="blip 2"):
        with_retries(fn, attempts=3, base_delay=0.5, max_delay=10, sleep=delays.append)
    assert fn.calls == 3
    assert len(delays) == 2


def test_with_retries_does_not_retry_permanent_errors():
    fn = Flaky(PermanentEmbeddingError("bad model"))
    with pytest.raises(PermanentEmbeddingError):
        with_retries(fn, attempts=3, base_delay=0.5, max_delay=10, sleep=pytest.fail)
    assert fn.calls == 1


def test_with_retries_jitter_stays_within_the_exponential_cap():
    delays: list[float] = []
    for _ in range(200):
        fn = Flaky(*(TransientEmbeddingError("blip") for _ in range(4)))
        with_retries(fn, attempts=5, base_delay=0.5, max_delay=1.5, sleep=delays.append)
    by_retry = [delays[retry::4] for retry in range(4)]
    caps = [0.5, 1.0, 1.5, 1.5]
    for retry_delays, cap in zip(by_retry, caps, strict=False):
        assert all(0.0 <= delay <= cap for delay in retry_delays)
        # Full jitter spreads over the whole range, not just near the cap.
        assert min(retry_delays) < cap * 0.2
        assert max(retry_delays) > cap * 0.8


def test_with_retries_waits_exactly_the_retry_after():
    delays: list[float] = []
    fn = Flaky(TransientEmbeddingError("429", retry_after=2.5))
    with_retries(fn, attempts=3, base_delay=0.5, max_delay=10, sleep=delays.append)
    assert delays == [2.5]


def test_with_retries_hands_back_a_retry_after_longer_than_max_delay():
    fn = Flaky(TransientEmbeddingError("429", retry_after=60))
    with pytest.raises(TransientEmbeddingError) as raised:
        with_retries(fn, attempts=3, base_delay=0.5, max_delay=10, sleep=pytest.fail)
    assert raised.value.retry_after == 60
    assert fn.calls == 1


def test_retry_after_is_read_as_seconds_or_http_date():
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    assert parse_retry_after("-4") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_client_returns_the_json_body(server):
    client = JsonHttpClient(provider="fake", timeout=2)
    body = client.post(server.url + "/api/embed", {"model": "m", "input": ["a"]})
    assert len(body["embeddings"][0]) == 4
    assert server.requests[0].json == {"model": "m", "input": ["a"]}


def test_client_maps_429_to_transient_with_retry_after(server):
    server.script(Reply.rate_limited(retry_after="3"))
    with pytest.raises(TransientEmbeddingError, match="rate limited") as raised:
        JsonHttpClient(provider="fake", timeout=2).post(server.url + "/api/embed", {"input": ["a"]})
    assert raised.value.retry_after == 3.0


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_client_maps_server_errors_to_transient(server, status):
    server.script(Reply.error(status, "model is loading", style="ollama"))
    with pytest.raises(TransientEmbeddingError, match=f"HTTP {status}: model is loading"):
        JsonHttpClient(provider="fake", timeout=2).post(server.url + "/api/embed", {"input": ["a"]})


@pytest.mark.parametrize(
    ("status", "style"),
    [(400, "openai"), (401, "openai"), (404, "ollama"), (422, "ollama")],
)
def test_client_maps_other_client_errors_to_permanent_with_the_providers_message(server, status, style):
    server.script(Reply.error(status, 'model "nope" not found, try pulling it first', style=style))
    with pytest.raises(PermanentEmbeddingError) as raised:
        JsonHttpClient(provider="fake", timeout=2).post(server.url + "/api/embed", {"input": ["a"]})
    assert str(raised.value) == f'fake: HTTP {status}: model "nope" not found, try pulling it first'


def test_client_quotes_a_non_json_error_body(server):
    server.script(
        Reply(
            status=403,
            raw=b"<html>Forbidden by proxy</html>",
            headers={"Content-Type": "text/html"},
        )
    )
    with pytest.raises(PermanentEmbeddingError, match="HTTP 403: <html>Forbidden by proxy</html>"):
        JsonHttpClient(provider="fake", timeout=2).post(server.url + "/api/embed", {"input": ["a"]})


def test_client_refuses_a_success_that_is_not_json(server):
    server.script(Reply(raw=b"<html>login page</html>", headers={"Content-Type": "text/html"}))
    with pytest.raises(PermanentEmbeddingError, match="not JSON"):
        JsonHttpClient(provider="fake", timeout=2).post(server.url + "/api/embed", {"input": ["a"]})


def test_client_maps_a_timeout_to_transient(server):
    server.script(Reply.hang(5))
    with pytest.raises(TransientEmbeddingError, match="within 0.2s"):
        JsonHttpClient(provider="fake", timeout=0.2).post(server.url + "/api/embed", {"input": ["a"]})


def test_client_maps_a_refused_connection_to_transient():
    with FakeEmbeddingServer() as stopped:
        url = stopped.url
    with pytest.raises(TransientEmbeddingError, match="cannot connect"):
        JsonHttpClient(provider="fake", timeout=1).post(url + "/api/embed", {"input": ["a"]})


def test_client_refuses_an_unsupported_url_scheme_permanently():
    with pytest.raises(PermanentEmbeddingError, match="unsupported URL"):
        JsonHttpClient(provider="fake", timeout=1).post("ftp://127.0.0.1/api/embed", {})


class FakeBudget:
    def __init__(self, *grants: bool) -> None:
        self.grants = list(grants)
        self.timeouts: list[float] = []

    def acquire(self, timeout: float) -> bool:
        self.timeouts.append(timeout)
        return self.grants.pop(0)


def test_client_takes_a_budget_slot_before_each_request(server):
    budget = FakeBudget(True, True)
    client = JsonHttpClient(provider="fake", timeout=2, budget=budget, budget_timeout=4)
    client.post(server.url + "/api/embed", {"input": ["a"]})
    client.post(server.url + "/api/embed", {"input": ["b"]})
    assert budget.timeouts == [4, 4]
    assert len(server.requests) == 2


def test_client_does_not_send_when_the_budget_has_no_slot(server):
    client = JsonHttpClient(provider="fake", timeout=2, budget=FakeBudget(False))
    with pytest.raises(TransientEmbeddingError, match="request budget exhausted"):
        client.post(server.url + "/api/embed", {"input": ["a"]})
    assert server.requests == []


def test_vectors_of_the_wrong_length_are_refused():
    with pytest.raises(
        PermanentEmbeddingError,
        match="provider returned 3-dimensional vectors, expected 4",
    ):
        validate_vectors([[0.1, 0.2, 0.3]], expected_count=1, dimensions=4, provider="fake")


def test_a_vector_count_other_than_the_input_count_is_refused():
    with pytest.raises(PermanentEmbeddingError, match="returned 1 vectors for 2 inputs"):
        validate_vectors([[0.1]], expected_count=2, dimensions=1, provider="fake")


def test_non_numeric_vectors_are_refused():
    with pytest.raises(PermanentEmbeddingError, match="not a list of numbers"):
        validate_vectors([["x"]], expected_count=1, dimensions=1, provider="fake")


def test_request_slices_respect_item_and_token_limits():
    assert request_slices(5, max_items=2) == [(0, 2), (2, 4), (4, 5)]
    assert request_slices(4, max_items=10, token_counts=[3, 3, 3, 9], max_tokens=6) == [
        (0, 2),
        (2, 3),
        (3, 4),
    ]
    assert request_slices(0, max_items=2) == []


@pytest.mark.parametrize(
    ("text", "at_least"),
    [
        ("The quick brown fox jumps over the lazy dog.", 10),
        ('{"id": 42, "tags": ["a", "b"]}', 20),
        ("東京都", 3),
    ],
)
def test_token_estimate_errs_high(text, at_least):
    assert estimate_tokens(text) >= at_least


def test_truncating_to_an_estimate_cuts_at_a_word_boundary_within_budget():
    text = "alpha beta gamma delta epsilon " * 50
    cut = truncate_to_estimate(text, 20)
    assert estimate_tokens(cut) <= 20
    assert text.startswith(cut)
    assert cut.split()[-1] in {"alpha", "beta", "gamma", "delta", "epsilon"}
    assert truncate_to_estimate("short text", 20) == "short text"


def test_truncating_a_single_giant_word_cuts_inside_it():
    cut = truncate_to_estimate("x" * 1000, 10)
    assert cut == "x" * 30
    assert estimate_tokens(cut) == 10
