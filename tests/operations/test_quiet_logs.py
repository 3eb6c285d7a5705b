"""Idle, beat and the reconcilers log nothing: clean ticks are not news.
Repairs and failures still are."""

from __future__ import annotations

import logging

import pytest

from common.logging import QuietReconcilerTicks
from tests.support.processes import Stack
from tests.support.waiting import wait_until


def _record(level: int, message: str, *args) -> logging.LogRecord:
    return logging.LogRecord("celery.app.trace", level, __file__, 1, message, args, None)


@pytest.mark.unit
def test_the_filter_drops_only_informational_reconciler_lines():
    quiet = QuietReconcilerTicks()
    assert not quiet.filter(
        _record(logging.INFO, "Task %s[%s] succeeded in %ss: %s", "reconcile.redispatch_stuck_chunks", "abc", 0.01, {})
    )
    assert not quiet.filter(
        _record(
            logging.INFO, "Scheduler: Sending due task %s (%s)", "admit-pending-jobs", "reconcile.admit_pending_jobs"
        )
    )
    assert quiet.filter(
        _record(
            logging.ERROR,
            "Task %s[%s] raised unexpected: %r",
            "reconcile.redispatch_stuck_chunks",
            "abc",
            ValueError("x"),
        )
    )
    assert quiet.filter(
        _record(logging.INFO, "Task %s[%s] succeeded in %ss: %s", "documents.parse_document", "abc", 0.2, None)
    )


@pytest.mark.chaos
@pytest.mark.django_db(transaction=True)
def test_an_idle_deployment_logs_no_reconciler_ticks(tmp_path):
    stack = Stack(tmp_path / "stack", MIRAGE_RECONCILE_INTERVAL_SECONDS="1")
    try:
        stack.start_redis()
        stack.start_worker("ingest", "ingest,maintenance", concurrency=1)
        stack.start_beat()
        client = stack.redis()

        def ticks() -> int:
            return sum(1 for _ in client.scan_iter(match=f"{stack.redis_prefix}celery-task-meta-*", count=1000))

        # Six reconcilers every second: wait for a few dozen finished ticks.
        wait_until(lambda: ticks() >= 30, timeout=120, interval=0.5, message="reconciler ticks ran")
        logs = stack.log("ingest") + stack.log("beat")
        # The worker's start-up banner lists its tasks (`  . reconcile.x`): not a tick.
        ticks_logged = [line for line in logs.splitlines() if "reconcile." in line and not line.startswith("  . ")]
        assert ticks_logged == []
    finally:
        stack.stop_all()
