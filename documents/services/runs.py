"""Runs of a document: starting a reindex or a retry, stopping a run
(cancel, timeout) and deleting a document."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from common import events as common_events
from common import history, signals
from documents import events, jobkinds
from documents.models import Chunk, Document
from documents.services.finishing import document_chunk_counts
from documents.services.transitions import chunks_transition, document_transition, lock_job_and_document
from documents.status import derive_document_status
from jobs import services as job_services
from jobs.models import Job

DocStatus = Document.Status
ChunkStatus = Chunk.Status


class DocumentBusy(Exception):
    """The document has work in flight; the message says which job."""


class NothingToRetry(Exception):
    """A retry was asked for a document with no chunk to retry; the message
    says what its chunks are."""


def _document_job_active(document: Document) -> Job | None:
    if document.current_job_id is None:
        return None
    return Job.objects.filter(id=document.current_job_id, status__in=Job.ACTIVE_STATUSES).first()


def retry_statuses(*, include_corrupted: bool) -> list[str]:
    """The chunks a retry queues again: failed ones, those a cancelled run
    left `pending` (they never ran), and on request the truncated ones."""
    statuses = [ChunkStatus.ERROR, ChunkStatus.PENDING]
    if include_corrupted:
        statuses.append(ChunkStatus.CORRUPTED)
    return statuses


@transaction.atomic
def document_reindex(*, document: Document, actor: str = history.SYSTEM, priority: str = Job.Priority.NORMAL) -> Job:
    """Queue a re-parse of the stored file. Unchanged chunks keep their vectors."""
    return _document_start_job(
        document=document, kind=jobkinds.REINDEX_DOCUMENT, actor=actor, action="document.reindex", priority=priority
    )


@transaction.atomic
def document_retry_failed(
    *,
    document: Document,
    include_corrupted: bool = False,
    actor: str = history.SYSTEM,
    priority: str = Job.Priority.NORMAL,
) -> Job:
    """Queue a job that re-embeds only the chunks in `error` (and optionally
    `corrupted`), and those a cancelled run left `pending`; `ready` chunks
    are not touched."""
    statuses = retry_statuses(include_corrupted=include_corrupted)
    if not Chunk.objects.filter(document_id=document.id, status__in=statuses).exists():
        raise NothingToRetry(
            f"document {document.id} has no chunk to retry (it is {document.status}; retry re-embeds chunks in "
            f"{', '.join(statuses)})"
        )
    return _document_start_job(
        document=document,
        kind=jobkinds.RETRY_CHUNKS,
        metadata={"include_corrupted": include_corrupted},
        actor=actor,
        action="document.retry",
        priority=priority,
    )


def _document_start_job(
    *,
    document: Document,
    kind: str,
    actor: str,
    action: str,
    metadata: dict | None = None,
    priority: str = Job.Priority.NORMAL,
) -> Job:
    document = Document.objects.select_for_update().get(id=document.id)
    active = _document_job_active(document)
    if active is not None:
        raise DocumentBusy(f"document {document.id} already has job {active.id} ({active.kind}, {active.status})")
    job = job_services.job_create(
        kind=kind,
        project_id=document.project_id,
        subject_id=document.id,
        metadata={"filename": document.filename, **(metadata or {})},
        priority=priority,
        actor=actor,
    )
    document.current_job = job
    document.save(update_fields=["current_job", "updated_at"])
    history.audit_record(
        project_id=document.project_id,
        actor=actor,
        action=action,
        target=f"document {document.id} {document.filename}",
        document_id=document.id,
        job_id=job.id,
        priority=priority,
        **(metadata or {}),
    )
    return job


def document_delete(*, document: Document, actor: str = history.SYSTEM) -> None:
    """Delete a document, its chunks and its file; active work is cancelled
    first. The audit log keeps who deleted which file, and when."""
    with transaction.atomic():
        _, document = lock_job_and_document(document_id=document.id)
        active = _document_job_active(document)
        if active is not None:
            job_services.job_cancel(job_id=active.id, actor=actor, reason="its document was deleted")
        file_name = document.file.name
        deleted = {"id": document.id, "project_id": document.project_id, "filename": document.filename}
        history.audit_record(
            project_id=document.project_id,
            actor=actor,
            action="document.deleted",
            target=f"document {document.id} {document.filename}",
            document_id=document.id,
            sha256=document.content_sha256,
            size_bytes=document.size_bytes,
        )
        document.delete()
        signals.document_deleted.send(sender=Document, data=deleted)
        transaction.on_commit(lambda: default_storage.delete(file_name))
        transaction.on_commit(
            lambda: common_events.publish(project_id=deleted["project_id"], event="document.deleted", data=deleted)
        )


def document_cancel_work(job: Job, *, actor: str, reason: str) -> None:
    """Stop a document's run (cancel hook of the document job kinds; runs in
    the cancelling or failing transaction). The new generation makes every
    task of the run a no-op from now on; chunks claimed by a worker go back
    to `pending` so that their late results are refused.

    A job stopped before its run began leaves a finished document as it
    was: its chunks are still the previous run's."""
    document = Document.objects.select_for_update().filter(id=job.subject_id).first()
    if document is None or document.current_job_id != job.id:
        return
    if document.status not in Document.ACTIVE_STATUSES:
        return
    active = Chunk.objects.filter(document=document)
    if job.status == Job.Status.CANCELLED:
        # Cancelled work may be resumed by a retry or reindex: chunks go back
        # to `pending`, and a claimed chunk's late result is refused.
        chunks_transition(
            chunks=active, from_statuses=ChunkStatus.PROCESSING, to=ChunkStatus.PENDING, lease_expires_at=None
        )
        final_status, message = DocStatus.CANCELLED, ""
    else:
        # The job failed (timed out): what was embedded stays usable, the rest
        # is an error, and the document says which it is.
        message = job.error_message or "the job failed"
        chunks_transition(
            chunks=active,
            from_statuses=Chunk.ACTIVE_STATUSES,
            to=ChunkStatus.ERROR,
            error=f"not embedded: {message}",
            lease_expires_at=None,
        )
        counts = document_chunk_counts(document.id)
        # A document still `pending` never began this run: whatever chunks it
        # has are an earlier run's.
        indexing = document.status == DocStatus.INDEXING
        final_status = derive_document_status(counts) if counts and indexing else DocStatus.ERROR
    document_transition(
        document_id=document.id,
        from_statuses=document.status,
        to=final_status,
        actor=actor,
        reason=reason if final_status == DocStatus.CANCELLED else message,
        new_generation=True,
        job_id=job.id,
        error_message=message,
        **_finished_at(final_status),
    )
    stopped_run = document.generation
    transaction.on_commit(lambda: events.forget_run(document_id=document.id, generation=stopped_run))


def _finished_at(status: str) -> dict:
    if status in (DocStatus.READY, DocStatus.PARTIAL):
        now = timezone.now()
        return {"embedding_finished_at": now, "indexed_at": now}
    return {}
