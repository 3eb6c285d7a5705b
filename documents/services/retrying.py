"""The retry run: a document's failed (or left pending, or truncated)
chunks are queued again and embedded under a new generation."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.utils import timezone

from documents.models import Chunk, Document
from documents.services.dispatch import dispatch_chord
from documents.services.finishing import document_finalize
from documents.services.parsing import run_begin
from documents.services.runs import retry_statuses
from documents.services.transitions import chunks_transition
from jobs import services as job_services
from jobs.models import Job

ChunkStatus = Chunk.Status


def document_retry_chunks(*, document_id: int, job_id: int) -> None:
    """Re-queue the document's failed chunks (the retry job's work)."""
    document = run_begin(document_id=document_id, job_id=job_id)
    if document is None:
        return
    job = Job.objects.get(id=job_id)
    statuses = retry_statuses(include_corrupted=bool(job.metadata.get("include_corrupted")))
    chord_id = str(uuid.uuid4())
    with transaction.atomic():
        now = timezone.now()
        chunks = Chunk.objects.filter(document_id=document_id, status__in=statuses)
        counts = dict.fromkeys(statuses, 0)
        chunk_ids = []
        for chunk_id, status in chunks.values_list("id", "status"):
            chunk_ids.append(chunk_id)
            counts[status] += 1
        requeue = {"error": "", "attempts": 0, "lease_expires_at": None, "dispatched_at": now}
        chunks_transition(
            chunks=Chunk.objects.filter(id__in=chunk_ids),
            from_statuses=[status for status in statuses if status != ChunkStatus.PENDING],
            to=ChunkStatus.PENDING,
            **requeue,
        )
        Chunk.objects.filter(id__in=chunk_ids, status=ChunkStatus.PENDING).update(updated_at=now, **requeue)
        Document.objects.filter(id=document_id).update(parsing_finished_at=now)
        job_services.job_set_progress(
            job_id=job_id,
            percentage=0,
            message=f"retrying 0/{len(chunk_ids)} chunks ({_retry_breakdown(counts)})",
            chunks_created=len(chunk_ids),
        )
        job_services.job_set_task_ids(job_id=job_id, chord_id=chord_id)
        job_services.job_update_metadata(
            job_id=job_id, chunks_final_at_start=Chunk.objects.filter(document_id=document_id).count() - len(chunk_ids)
        )
        generation = document.generation
        if chunk_ids:
            transaction.on_commit(
                lambda: dispatch_chord(
                    chunk_ids=chunk_ids,
                    document_id=document_id,
                    generation=generation,
                    chord_id=chord_id,
                    priority=job.priority,
                )
            )
        else:
            transaction.on_commit(lambda: document_finalize(document_id=document_id, generation=generation))


def _retry_breakdown(counts: dict[str, int]) -> str:
    words = {
        ChunkStatus.ERROR: "failed",
        ChunkStatus.PENDING: "left pending by a cancelled run",
        ChunkStatus.CORRUPTED: "truncated",
    }
    parts = [f"{count} {words[status]}" for status, count in counts.items() if count]
    return ", ".join(parts) or "nothing to retry"
