from __future__ import annotations

import fcntl
from pathlib import Path

import pytest
import redis
from django.conf import settings

from mirage.celery import app as celery_app

# The `corpus_present` fixture behind `requires_corpus`.
pytest_plugins = ["tests.support.corpus"]


# The suite runs in several processes (make test) against one PostgreSQL
# server. A test that restarts it (`restarts_database`) would break whatever
# the other processes are doing then, so it takes this lock exclusively and
# every other test takes it shared, from its set-up to its teardown.
DATABASE_LOCK = Path(__file__).resolve().parents[1] / ".mirage" / "tests-database.lock"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    DATABASE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    exclusive = item.get_closest_marker("restarts_database") is not None
    with open(DATABASE_LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.MIRAGE_REDIS_URL)


@pytest.fixture(scope="session", autouse=True)
def clean_test_redis(redis_client):
    """The test database is new every session, so ids repeat: nothing from an
    earlier session may linger in the test Redis database."""
    redis_client.flushdb()


QUEUES = ("ingest", "embed", "maintenance")

# The session worker, once started, and whether it consumes its queues now.
_session_worker = {"instance": None, "consuming": False}


def _set_consuming(consuming: bool) -> None:
    """Start or stop the session worker's consumption of every queue (remote
    control, answered from inside the worker's own thread)."""
    worker = _session_worker["instance"]
    if worker is None or _session_worker["consuming"] == consuming:
        return
    command = celery_app.control.add_consumer if consuming else celery_app.control.cancel_consumer
    for queue in QUEUES:
        replies = command(queue, destination=[worker.hostname], reply=True, timeout=30)
        assert replies, f"the session worker did not answer {command.__name__}({queue!r})"
    _session_worker["consuming"] = consuming


@pytest.fixture(autouse=True)
def _session_worker_only_for_tests_that_ask(request):
    """A test that does not ask for the `worker` fixture runs with nobody
    consuming: a task its arrangement sends (an upload's parse) stays queued
    instead of changing the states the test arranged."""
    if "worker" not in request.fixturenames:
        _set_consuming(False)
    yield


@pytest.fixture(scope="session")
def celery_worker_session(django_db_setup, django_db_blocker):
    """A real Celery worker (threads) on the test Redis database, consuming
    every queue, for the whole session (paused for tests that do not ask for
    it)."""
    from celery.contrib.testing.worker import start_worker

    with (
        django_db_blocker.unblock(),
        start_worker(
            celery_app,
            pool="threads",
            concurrency=4,
            queues=list(QUEUES),
            perform_ping_check=False,
            shutdown_timeout=30,
        ) as worker,
    ):
        _session_worker.update(instance=worker, consuming=True)
        try:
            yield worker
        finally:
            _session_worker.update(instance=None, consuming=False)


@pytest.fixture
def worker(celery_worker_session, transactional_db, redis_client):
    """Per test: the session worker, against committed rows. Afterwards the
    queues are emptied and the worker allowed to finish what it holds, so the
    database flush between tests never races a task."""
    _set_consuming(True)
    yield celery_worker_session
    from celery.worker import state

    from tests.support.waiting import wait_until

    celery_app.control.purge()
    wait_until(
        lambda: not state.active_requests and not state.reserved_requests,
        timeout=60,
        message="worker idle after the test",
    )


def pytest_sessionstart(session):
    from tests.support import figures

    session.config.figures_start = figures.mark_start()


def pytest_terminal_summary(terminalreporter):
    from tests.support import figures

    entries = figures.recorded(since=getattr(terminalreporter.config, "figures_start", 0))
    if entries:
        terminalreporter.section("figures observed")
        for entry in entries:
            values = {key: value for key, value in entry.items() if key not in ("test", "at")}
            terminalreporter.write_line(f"{entry['test']}: {values}")
