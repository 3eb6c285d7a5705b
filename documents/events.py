"""Document events, dispatch markers and finished-chunk counts, all kept in Redis."""

from __future__ import annotations

import logging

import redis

from common import events as common_events

logger = logging.getLogger(__name__)

# A marker per dispatched run lives as long as any sane run; it only has to
# outlive the run's messages in the broker.
DISPATCH_MARKER_TTL_SECONDS = 7 * 24 * 3600


def document_payload(document) -> dict:
    return {
        "id": document.id,
        "project_id": document.project_id,
        "filename": document.filename,
        "status": document.status,
        "error_message": document.error_message,
        "generation": document.generation,
        "current_job_id": document.current_job_id,
    }


def publish_document(document) -> None:
    common_events.publish(project_id=document.project_id, event="document.status", data=document_payload(document))


def publish_document_progress(*, document_id: int, generation: int, counts: dict[str, int]) -> None:
    """`document.progress`: how far the document's chunks are (its status is
    unchanged; a change of status is a `document.status` event)."""
    from django.utils import timezone

    from documents import selectors
    from documents.models import Chunk, Document

    document = Document.objects.select_related("current_job").filter(id=document_id).first()
    if document is None:
        return
    project_id = document.project_id
    total = sum(counts.values())
    processed = sum(counts.get(status, 0) for status in Chunk.FINAL_STATUSES)
    # 100 is kept for a finished document, announced by its status event.
    percentage = min(99, 100 * processed // total) if total else 0
    document.chunks_total, document.chunks_processed = total, processed
    eta = selectors.eta_seconds(document, now=timezone.now())
    common_events.publish_monotonic(
        project_id=project_id,
        event="document.progress",
        data={
            "id": document_id,
            "project_id": project_id,
            "generation": generation,
            "chunks_processed": processed,
            "chunks_total": total,
            "progress_percentage": percentage,
            "eta_seconds": eta,
        },
        key=_progress_key(document_id, generation),
        rank=processed,
        # Every chunk final: the run is over (its status event follows), so
        # the rank is kept only briefly, whoever publishes last.
        ttl=common_events.FINISHED_RANK_TTL_SECONDS if total and processed == total else common_events.RANK_TTL_SECONDS,
    )


def _progress_key(document_id: int, generation: int) -> str:
    return f"document:{document_id}:{generation}"


def _marker(document_id: int, generation: int) -> str:
    return common_events.redis_key("dispatched", document_id, generation)


def _runs() -> str:
    """The set of runs whose dispatch marker was written and not yet
    forgotten ("<document id>:<generation>"): where the reconciler finds a
    run that ended without its after-commit work (`lost_run_ends`)."""
    return common_events.redis_key("runs", "dispatched")


def _run_member(document_id: int, generation: int) -> str:
    return f"{document_id}:{generation}"


def mark_dispatched(*, document_id: int, generation: int) -> None:
    """Remember, in the broker's own Redis, that this run's tasks were sent. If
    Redis later loses its data, the marker goes with the messages, and the
    reconciler knows to send them again."""
    try:
        pipe = common_events.client().pipeline(transaction=True)
        pipe.set(_marker(document_id, generation), 1, ex=DISPATCH_MARKER_TTL_SECONDS)
        pipe.sadd(_runs(), _run_member(document_id, generation))
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("dispatch marker for document %s not written: %s", document_id, exc)


def _finished(document_id: int, generation: int) -> str:
    return common_events.redis_key("finished", document_id, generation)


def _drained(document_id: int, generation: int) -> str:
    return common_events.redis_key("drained", document_id, generation)


# Counts a finished chunk only while the run's dispatch marker is there: a
# task that finishes after its run was finalised (and its keys removed)
# must not bring the count back for another week.
_COUNT_FINISHED = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local count = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return {count, redis.call('EXISTS', KEYS[3])}
"""


def count_finished(*, document_id: int, generation: int) -> tuple[int, bool] | None:
    """Count one more finished chunk of this run; returns the run's count so
    far (windowed dispatch sends the next block at every block-th) and
    whether no chunk of the run waits to be sent any more (its tail: each
    finishing task then checks whether it was the last). None when there is
    no count: Redis cannot be reached, or the run's dispatch marker is gone
    (the run was finalised, or Redis lost its data); the caller then sends
    one chunk for one and checks, as if every count were a block's end."""
    keys = (_marker(document_id, generation), _finished(document_id, generation), _drained(document_id, generation))
    try:
        counted = common_events.client().eval(_COUNT_FINISHED, len(keys), *keys, DISPATCH_MARKER_TTL_SECONDS)
    except redis.RedisError as exc:
        logger.warning("finished-chunk count of document %s not kept: %s", document_id, exc)
        return None
    if not counted:
        return None
    count, drained = counted
    return int(count), bool(drained)


def mark_drained(*, document_id: int, generation: int, drained: bool = True) -> None:
    """Say whether every chunk of the run has been sent (none waits)."""
    key = _drained(document_id, generation)
    try:
        if drained:
            common_events.client().set(key, 1, ex=DISPATCH_MARKER_TTL_SECONDS)
        else:
            common_events.client().delete(key)
    except redis.RedisError as exc:
        logger.warning("dispatch state of document %s not written: %s", document_id, exc)


def forget_run(*, document_id: int, generation: int) -> None:
    """A finished run's keys (its dispatch marker, finished count and
    drained flag) are of no more use: nothing of the run waits in the
    broker. Its progress rank is kept a little longer, to drop late events."""
    keys = (_marker(document_id, generation), _finished(document_id, generation), _drained(document_id, generation))
    try:
        pipe = common_events.client().pipeline(transaction=False)
        pipe.delete(*keys)
        pipe.srem(_runs(), _run_member(document_id, generation))
        pipe.expire(
            common_events.rank_key(_progress_key(document_id, generation)), common_events.FINISHED_RANK_TTL_SECONDS
        )
        pipe.execute()
    except redis.RedisError as exc:
        logger.warning("keys of document %s's finished run not removed: %s", document_id, exc)


def dispatched_runs() -> list[tuple[int, int]]:
    """Every (document_id, generation) run marked dispatched and not yet
    forgotten: the runs in flight, and any that ended while the process
    ending it died before forgetting it. Empty when Redis cannot be asked."""
    try:
        members = common_events.client().smembers(_runs())
    except redis.RedisError as exc:
        logger.warning("dispatched runs not readable: %s", exc)
        return []
    runs = []
    for member in members:
        document_id, _, generation = member.partition(":")
        if document_id.isdigit() and generation.isdigit():
            runs.append((int(document_id), int(generation)))
    return sorted(runs)


def documents_missing_dispatch_marker(runs) -> list[tuple[int, int]]:
    """The (document_id, generation) runs whose marker is gone. Empty when
    Redis cannot be asked (nothing can be concluded then)."""
    runs = list(runs)
    if not runs:
        return []
    try:
        pipe = common_events.client().pipeline(transaction=False)
        for document_id, generation in runs:
            pipe.exists(_marker(document_id, generation))
        found = pipe.execute()
    except redis.RedisError as exc:
        logger.warning("dispatch markers not readable: %s", exc)
        return []
    return [run for run, exists in zip(runs, found, strict=False) if not exists]
