"""Finishing a run: the document's final status from its chunks, and its
job ended truthfully."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from common import history
from documents import events
from documents.models import Chunk, Document
from documents.services.transitions import document_transition, lock_job_and_document
from documents.status import derive_document_status
from jobs import services as job_services

logger = logging.getLogger(__name__)

DocStatus = Document.Status
ChunkStatus = Chunk.Status


def document_chunk_counts(document_id: int) -> dict[str, int]:
    rows = Chunk.objects.filter(document_id=document_id).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def document_finalize(
    *, document_id: int, generation: int | None = None, actor: str = history.WORKER, reason: str = ""
) -> str | None:
    """Set the document's final status from its chunks, and end its job
    truthfully: `completed` only when the document is `ready` or `partial`.

    Does nothing while chunks are still in flight, for a stale generation, or
    for a document that is not `indexing`. Returns the status it set.
    """
    with transaction.atomic():
        job, document = lock_job_and_document(document_id=document_id)
        if document is None or document.status != DocStatus.INDEXING:
            return None
        if document.current_job_id != (job.id if job else None):
            return None  # a new run started between the two reads; it finalizes itself
        if generation is not None and document.generation != generation:
            return None
        counts = document_chunk_counts(document_id)
        status = derive_document_status(counts)
        if status == DocStatus.INDEXING:
            return None
        now = timezone.now()
        failed = counts.get(ChunkStatus.ERROR, 0)
        corrupted = counts.get(ChunkStatus.CORRUPTED, 0)
        total = sum(counts.values())
        error_message = _status_reason(status, counts, document_id)
        usable_fields = {"indexed_at": now} if status in (DocStatus.READY, DocStatus.PARTIAL) else {}
        document = document_transition(
            document_id=document_id,
            from_statuses=DocStatus.INDEXING,
            to=status,
            actor=actor,
            reason=reason or _finish_words(status, counts) + (f": {error_message}" if error_message else ""),
            embedding_finished_at=now,
            error_message=error_message,
            **usable_fields,
        )
        if document.current_job_id:
            counters = {"chunks_failed": failed, "files_indexed": 1 if status != DocStatus.ERROR else 0}
            if status in (DocStatus.READY, DocStatus.PARTIAL):
                usable = total - failed
                job_services.job_complete(
                    job_id=document.current_job_id,
                    actor=actor,
                    message=f"{usable}/{total} chunks embedded"
                    + (f", {failed} failed" if failed else "")
                    + (f", {corrupted} truncated" if corrupted else ""),
                    **counters,
                )
            else:
                job_services.job_fail(
                    job_id=document.current_job_id,
                    actor=actor,
                    error_type="embedding_failed",
                    error_message=document.error_message,
                    **counters,
                )
        # Registered last, after the status events: a run still marked
        # dispatched after its end tells the reconciler that this process
        # died before its after-commit work was done (repairs.lost_run_ends).
        finished_run = document.generation
        transaction.on_commit(lambda: events.forget_run(document_id=document_id, generation=finished_run))
    logger.info("document %s finalized as %s (%s)", document_id, status, counts)
    return status


def _status_reason(status: str, counts: dict[str, int], document_id: int) -> str:
    if status == DocStatus.READY:
        return ""
    total = sum(counts.values())
    failed = counts.get(ChunkStatus.ERROR, 0)
    if total == 0:
        return "no chunks: the file has nothing to index"
    first_error = (
        Chunk.objects.filter(document_id=document_id, status=ChunkStatus.ERROR)
        .order_by("position")
        .values_list("error", flat=True)
        .first()
    )
    if status == DocStatus.ERROR:
        return f"no chunk could be embedded ({failed}/{total} failed): {first_error}"
    parts = []
    if failed:
        parts.append(f"{failed}/{total} chunks failed (first error: {first_error})")
    if counts.get(ChunkStatus.CORRUPTED, 0):
        parts.append(f"{counts[ChunkStatus.CORRUPTED]}/{total} chunks were truncated by the model")
    return "; ".join(parts)


def _finish_words(status: str, counts: dict[str, int]) -> str:
    total = sum(counts.values())
    usable = counts.get(ChunkStatus.READY, 0) + counts.get(ChunkStatus.CORRUPTED, 0)
    return f"finished: {usable}/{total} chunks embedded"
