from __future__ import annotations

import pytest
import redis
from django.conf import settings

from mirage.celery import app as celery_app

# The `corpus_present` fixture behind `requires_corpus`.
pytest_plugins = ["tests.support.corpus"]


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.MIRAGE_REDIS_URL)


@pytest.fixture(scope="session", autouse=True)
def clean_test_redis(redis_client):
    """The test database is new every session, so ids repeat: nothing from an
    earlier session may linger in the test Redis database."""
    redis_client.flushdb()


@pytest.fixture(scope="session")
def celery_worker_session(django_db_setup, django_db_blocker):
    """A real Celery worker (threads) on the test Redis database, consuming
    every queue, for the whole session."""
    from celery.contrib.testing.worker import start_worker

    with (
        django_db_blocker.unblock(),
        start_worker(
            celery_app,
            pool="threads",
            concurrency=4,
            queues=["ingest", "embed", "maintenance"],
            perform_ping_check=False,
            shutdown_timeout=30,
        ) as worker,
    ):
        yield worker


@pytest.fixture
def worker(celery_worker_session, transactional_db, redis_client):
    """Per test: the session worker, against committed rows. Afterwards the
    queues are emptied and the worker allowed to finish what it holds, so the
    database flush between tests never races a task."""
    yield celery_worker_session
    from celery.worker import state

    from tests.support.waiting import wait_until

    celery_app.control.purge()
    wait_until(
        lambda: not state.active_requests and not state.reserved_requests,
        timeout=60,
        message="worker idle after the test",
    )


def pytest_terminal_summary(terminalreporter):
    from tests.support import figures

    entries = figures.recorded()
    if entries:
        terminalreporter.section("figures observed")
        for entry in entries:
            values = {key: value for key, value in entry.items() if key not in ("test", "at")}
            terminalreporter.write_line(f"{entry['test']}: {values}")
