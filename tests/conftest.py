from __future__ import annotations

import pytest
import redis
from django.conf import settings

from mirage.celery import app as celery_app


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.MIRAGE_REDIS_URL)


@pytest.fixture(scope="session")
def celery_worker_session(django_db_setup, django_db_blocker):
    """A real Celery worker (threads) on the test Redis database, consuming
    every queue, for the whole session."""
    from celery.contrib.testing.worker import start_worker

    redis.Redis.from_url(settings.MIRAGE_REDIS_URL).flushdb()
    with django_db_blocker.unblock():
        with start_worker(
            celery_app,
            pool="threads",
            concurrency=4,
            queues=["ingest", "embed", "maintenance"],
            perform_ping_check=False,
            shutdown_timeout=30,
        ) as worker:
            yield worker


@pytest.fixture
def worker(celery_worker_session, transactional_db, redis_client):
    """Per test: the session worker, against committed rows."""
    yield celery_worker_session



def pytest_terminal_summary(terminalreporter):
    from tests.support import figures

    entries = figures.recorded()
    if entries:
        terminalreporter.section("figures observed")
        for entry in entries:
            values = {key: value for key, value in entry.items() if key not in ("test", "at")}
            terminalreporter.write_line(f"{entry['test']}: {values}")
