"""Settings for the test suite: the project's settings with test data kept
away from a developer's own (database `test_<name>` by pytest-django, Redis
database 9, a separate media root) and short timings so the reconcilers can
be watched at work."""

import os

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
