"""Sending tasks: a run's chord of embed_chunk tasks (windowed), reconciler
re-dispatches, and the task that does a document job's work.

Windowed dispatch: a run keeps at most MIRAGE_DISPATCH_WINDOW of its chunks'
tasks in the broker. The rest wait in PostgreSQL, `pending` with no
`dispatched_at`; as embed tasks finish, the next waiting chunks are sent,
with the same chord, a block at a time (`window_block()`, a quarter of the
window): the task that finishes a run's block-th, 2*block-th, ... chunk
(a counter per run in Redis, `events.count_finished`) sends the next block
in one statement and on one producer (`dispatch_next`). Once none waits
(the run is "drained"), each finishing task checks whether it was the
run's last and finalises the document. The broker's embed
queue therefore holds a few dozen tasks per indexing document, not every
chunk of every document, and a document that arrives later is embedded
alongside the earlier ones instead of behind them: fair across documents
and projects without a queue per project. Priorities (`high`, `normal`,
`low`) go to the broker as message priorities (Redis transport
`priority_steps`), so a high-priority run's tasks are taken first.
"""

from __future__ import annotations

import uuid

from celery import current_app, signature
from django.conf import settings
from django.db import connection
from django.utils import timezone

from common.pauses import PAUSED_SQL
from documents import events, jobkinds
from documents.models import Chunk
from jobs import services as job_services
from jobs.models import Job

# The broker's message priority of each job priority (Redis transport: 0 is
# served first; see CELERY_BROKER_TRANSPORT_OPTIONS `priority_steps`).
BROKER_PRIORITY = {Job.Priority.HIGH: 0, Job.Priority.NORMAL: 3, Job.Priority.LOW: 6}


def broker_priority(priority: str | None) -> int:
    return BROKER_PRIORITY.get(priority or Job.Priority.NORMAL, BROKER_PRIORITY[Job.Priority.NORMAL])


def dispatch_chord(
    *, chunk_ids: list[int], document_id: int, generation: int, chord_id: str, priority: str = Job.Priority.NORMAL
) -> None:
    """One embed_chunk task per chunk; finalize_document (task id `chord_id`)
    runs when all have returned. The first MIRAGE_DISPATCH_WINDOW tasks are
    sent now, the others a block at a time as earlier ones finish (dispatch_next).

    A Celery chord, sent as celery.chord sends one to the Redis result
    backend (every task carries the callback, its group and its index; the
    backend counts returns up to the chord size), but task by task:
    celery.chord holds a signature, a result and a result subscription per
    task in this process, which the ingest worker never frees."""
    group_id = str(uuid.uuid4())
    callback = signature("documents.finalize_document", args=[document_id, generation], immutable=True)
    callback.set(task_id=chord_id)
    current_app.backend.set_chord_size(group_id, len(chunk_ids))
    window = settings.MIRAGE_DISPATCH_WINDOW
    first, waiting = chunk_ids[:window], chunk_ids[window:]
    if waiting:
        # A parse stores its chunks as waiting already; a retry or a resume
        # marked them sent (every row written here is one more row version
        # with all its index entries).
        Chunk.objects.filter(id__in=waiting, dispatched_at__isnull=False).update(dispatched_at=None)
    _send(chunk_ids=first, priority=priority, chord=callback, group_id=group_id, first_index=0)
    events.mark_dispatched(document_id=document_id, generation=generation)
    events.mark_drained(document_id=document_id, generation=generation, drained=not waiting)


def _send(*, chunk_ids: list[int], priority: str, chord=None, group_id: str | None = None, first_index: int = 0):
    if not chunk_ids:
        return
    Chunk.objects.filter(id__in=chunk_ids).update(dispatched_at=timezone.now())
    options = {"priority": broker_priority(priority)}
    with current_app.producer_or_acquire() as producer:
        for index, chunk_id in enumerate(chunk_ids, start=first_index):
            if chord is not None:
                options.update(chord=chord, group_id=group_id, group_index=index)
            signature("documents.embed_chunk", args=[chunk_id]).apply_async(
                producer=producer, add_to_parent=False, **options
            )


def window_block() -> int:
    """How many waiting chunks a finishing task sends at once: a quarter of
    the window (at least one), so a run keeps between three quarters of
    the window and the whole window in the broker."""
    return max(1, settings.MIRAGE_DISPATCH_WINDOW // 4)


# Takes the document's next chunks that wait for their tasks (pending, never
# sent) and marks them sent, in one statement; SKIP LOCKED lets two finishing
# tasks take different chunks. A document no longer indexing, or a paused
# one, sends nothing (resume starts its window again). The document is
# checked once (an InitPlan), not once per chunk row, and the waiting chunks
# are the first entries of chunk_waiting_idx: the statement's cost does not
# grow with the document.
_NEXT_SQL = f"""
WITH next AS (
    SELECT w.id FROM documents_chunk AS w
     WHERE w.document_id = %(document_id)s AND w.status = 'pending' AND w.dispatched_at IS NULL
       AND EXISTS (SELECT 1 FROM documents_document AS d
                    WHERE d.id = %(document_id)s AND d.status = 'indexing'
                      AND NOT {PAUSED_SQL.format(project_id="d.project_id")})
     ORDER BY w.position
     LIMIT %(count)s
       FOR UPDATE OF w SKIP LOCKED
)
UPDATE documents_chunk AS c SET dispatched_at = now() FROM next WHERE c.id = next.id
RETURNING c.id, c.position
"""


def dispatch_next(
    *, document_id: int, priority: str, chord: dict | None, group_id: str | None, count: int = 1
) -> list[int]:
    """Send the document's next `count` waiting chunks (in position order),
    in the same chord as the task that just finished (none for a
    re-dispatched task). Returns their ids: empty when nothing waits."""
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_SQL, {"document_id": document_id, "count": count})
        rows = sorted(cursor.fetchall(), key=lambda row: row[1])
    if not rows:
        return []
    options = {"priority": broker_priority(priority), "add_to_parent": False}
    callback = signature(chord) if chord else None
    with current_app.producer_or_acquire() as producer:
        for chunk_id, position in rows:
            if callback is not None:
                options.update(chord=callback, group_id=group_id, group_index=position)
            signature("documents.embed_chunk", args=[chunk_id]).apply_async(producer=producer, **options)
    return [chunk_id for chunk_id, _ in rows]


def dispatch_chunks(chunk_ids: list[int]) -> None:
    """Send embed_chunk tasks outside any chord (reconciler re-dispatch), on
    one producer, each at its run's priority."""
    priorities = dict(Chunk.objects.filter(id__in=chunk_ids).values_list("id", "document__current_job__priority"))
    with current_app.producer_or_acquire() as producer:
        for chunk_id in chunk_ids:
            signature("documents.embed_chunk", args=[chunk_id]).apply_async(
                producer=producer, priority=broker_priority(priorities.get(chunk_id))
            )


def dispatch_job(job: Job) -> None:
    """Send the task that does a document job's work, at the job's priority."""
    task_name = "documents.retry_chunks" if job.kind == jobkinds.RETRY_CHUNKS else "documents.parse_document"
    result = signature(task_name, args=[job.subject_id, job.id]).apply_async(priority=broker_priority(job.priority))
    job_services.job_set_task_ids(job_id=job.id, task_id=result.id)
