"""Queues as the broker holds them, and which running worker consumes each."""

from __future__ import annotations

import threading
import time

from django.conf import settings

from documents.monitoring import store
from documents.monitoring.recording import PUBLISHED_AT_HEADER, message_headers

# What stops while nobody consumes a queue, in the words /healthz uses.
CONSEQUENCES = {
    "ingest": "uploaded documents are not being parsed",
    "embed": "chunks are not being embedded",
    "maintenance": "stuck work is not being repaired",
}


def mirage_queues() -> list[str]:
    return [queue.name for queue in settings.CELERY_TASK_QUEUES]


def queue_stats(*, now: float | None = None) -> dict[str, dict]:
    """Depth and age of the oldest waiting message of every Mirage queue, in
    one round trip. The age is None when the queue is empty, or when its
    oldest message carries no publish time (sent by a process without
    monitoring)."""
    now = now or time.time()
    names = mirage_queues()
    pipe = store.client().pipeline(transaction=False)
    for queue in names:
        for list_key in store.queue_keys(queue):
            pipe.llen(list_key)
            # The transport pushes on the left and pops on the right: the
            # right end holds the oldest message.
            pipe.lindex(list_key, -1)
    replies = iter(pipe.execute())
    stats = {}
    for queue in names:
        depth, oldest = 0, None
        for _ in store.queue_keys(queue):
            length, tail = next(replies), next(replies)
            depth += length
            if tail is not None:
                published = message_headers(tail).get(PUBLISHED_AT_HEADER)
                if isinstance(published, int | float):
                    age = max(0.0, now - published)
                    oldest = age if oldest is None else max(oldest, age)
        stats[queue] = {"depth": depth, "oldest_age_seconds": round(oldest, 1) if oldest is not None else None}
    return stats


# One broadcast at a time, its answer shared for a moment: concurrent
# broadcasts each hold a broker pool connection while waiting for another,
# and enough of them at once exhaust the pool and hang every caller.
_BROADCAST_LOCK = threading.Lock()
_BROADCAST_CACHE_SECONDS = 2.0
_BROADCAST_TIMEOUT_SECONDS = 1.0
_last_snapshot: tuple[float, dict] | None = None


def workers_snapshot(*, fresh: bool = False, timeout: float = _BROADCAST_TIMEOUT_SECONDS) -> dict:
    """The workers that answer, and which of them consume each queue:
    {"ok", "count", "names", "queues": {queue: [worker, ...]}} plus "error"
    when the broker could not be asked. Shared for two seconds."""
    global _last_snapshot
    with _BROADCAST_LOCK:
        if not fresh and _last_snapshot is not None and time.monotonic() - _last_snapshot[0] < _BROADCAST_CACHE_SECONDS:
            return _last_snapshot[1]
        snapshot = _ask_workers(timeout=timeout)
        _last_snapshot = (time.monotonic(), snapshot)
        return snapshot


def _ask_workers(*, timeout: float) -> dict:
    from celery import current_app as app

    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"ok": False, "count": 0, "names": [], "queues": {}, "error": str(exc)[:200]}
    consumers: dict[str, list[str]] = {queue: [] for queue in mirage_queues()}
    for worker, queues in replies.items():
        for queue in queues or []:
            consumers.setdefault(queue["name"], []).append(worker)
    names = sorted(replies)
    return {
        "ok": bool(names),
        "count": len(names),
        "names": names,
        "queues": {queue: sorted(workers) for queue, workers in consumers.items()},
    }
