import threading

import pytest

from documents.monitoring import queues

pytestmark = [pytest.mark.unit]


def test_twenty_concurrent_worker_checks_all_answer():
    """Concurrent broker broadcasts used to exhaust the broker pool and hang."""
    results: list[dict] = []
    threads = [threading.Thread(target=lambda: results.append(queues.workers_snapshot())) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert len(results) == 20
    assert all("ok" in result for result in results)
