"""Settings for the test suite: the project's settings with test data kept
away from a developer's own (database `test_<name>` by pytest-django, Redis
database 9, a separate media root; one more of each per parallel test
process) and short timings so the reconcilers can be watched at work."""

import os


def _separate_parallel_test_processes() -> None:
    """Under pytest-xdist, worker gwN uses Redis database 9 + N (or
    MIRAGE_TEST_REDIS_URL's + N): each test process of a parallel run is a
    test session of its own, as pytest-django gives it the database
    test_<name>_gwN. Set once per worker: processes a test starts inherit
    the worker's choice, or the Redis URL the test gives them."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or os.environ.get("MIRAGE_TEST_WORKER") == worker:
        return
    base, _, number = os.environ.get("MIRAGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9").rpartition("/")
    os.environ["MIRAGE_REDIS_URL"] = f"{base}/{int(number or 0) + int(worker[2:])}"
    os.environ["MIRAGE_TEST_WORKER"] = worker


_separate_parallel_test_processes()
os.environ.setdefault("MIRAGE_REDIS_URL", os.environ.get("MIRAGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9"))
os.environ.setdefault("MIRAGE_EMBEDDER", "hash")
# The test process runs against `test_<name>` while its settings are read
# with `<name>`: one fixed prefix keeps it and the worker processes it starts
# in one deployment.
os.environ.setdefault("MIRAGE_REDIS_PREFIX", "mirage-test:")
os.environ.setdefault("MIRAGE_RECONCILE_INTERVAL_SECONDS", "2")
os.environ.setdefault("MIRAGE_CHUNK_LEASE_SECONDS", "5")
os.environ.setdefault("MIRAGE_DISPATCH_GRACE_SECONDS", "5")
# The session's in-process worker closes its threads' connections after each
# task, so none is left open when the test database is dropped.
os.environ.setdefault("MIRAGE_WORKER_DATABASE_CONN_MAX_AGE", "0")

from mirage.settings import *  # noqa: E402,F403
from mirage.settings import STATE_DIR  # noqa: E402

MEDIA_ROOT = os.environ.get("MIRAGE_TEST_MEDIA_ROOT", str(STATE_DIR / "test-media"))
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MIRAGE_EMBED_REQUESTS_PER_MINUTE = 0
