"""Sending tasks: a run's chord of embed_chunk tasks, reconciler
re-dispatches, and the task that does a document job's work."""
from __future__ import annotations

import uuid

from celery import current_app, signature

from documents import events, jobkinds
from jobs import services as job_services
from jobs.models import Job


def dispatch_chord(*, chunk_ids: list[int], document_id: int, generation: int, chord_id: str) -> None:
    """One embed_chunk task per chunk; finalize_document (task id `chord_id`)
    runs when all have returned.

    A Celery chord, sent as celery.chord sends one to the Redis result
    backend (every task carries the callback, its group and its index; the
    backend counts returns up to the chord size), but task by task:
    celery.chord holds a signature, a result and a result subscription per
    task in this process, which the ingest worker never frees."""
    group_id = str(uuid.uuid4())
    callback = signature("documents.finalize_document", args=[document_id, generation], immutable=True)
    callback.set(task_id=chord_id)
    current_app.backend.set_chord_size(group_id, len(chunk_ids))
    with current_app.producer_or_acquire() as producer:
        for index, chunk_id in enumerate(chunk_ids):
            signature("documents.embed_chunk", args=[chunk_id]).apply_async(
                producer=producer, add_to_parent=False, chord=callback, group_id=group_id, group_index=index
            )
    events.mark_dispatched(document_id=document_id, generation=generation)


def dispatch_chunks(chunk_ids: list[int]) -> None:
    """Send embed_chunk tasks outside any chord (reconciler re-dispatch), on
    one producer."""
    with current_app.producer_or_acquire() as producer:
        for chunk_id in chunk_ids:
            signature("documents.embed_chunk", args=[chunk_id]).apply_async(producer=producer)



def dispatch_job(job: Job) -> None:
    """Send the task that does a document job's work."""
    task_name = "documents.retry_chunks" if job.kind == jobkinds.RETRY_CHUNKS else "documents.parse_document"
    result = signature(task_name, args=[job.subject_id, job.id]).apply_async()
    job_services.job_set_task_ids(job_id=job.id, task_id=result.id)

