import pytest

from tests.support.processes import Stack

# Beat runs the reconcilers this often in the chaos stacks.
RECONCILE_SECONDS = 2


@pytest.fixture
def stack(transactional_db, tmp_path):
    """A private Redis (started) and the environment for real workers and
    beat with short leases and reconcile intervals; every process it starts
    is stopped afterwards."""
    stack = Stack(
        tmp_path / "stack",
        MIRAGE_RECONCILE_INTERVAL_SECONDS=str(RECONCILE_SECONDS),
        MIRAGE_CHUNK_LEASE_SECONDS="3",
        MIRAGE_DISPATCH_GRACE_SECONDS="4",
        MIRAGE_TEST_EMBED_DELAY="0.02",
        MIRAGE_RETRY_BACKOFF_BASE_SECONDS="0.2",
        MIRAGE_RETRY_BACKOFF_MAX_SECONDS="2",
    )
    stack.start_redis()
    yield stack
    stack.stop_all()
