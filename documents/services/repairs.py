"""Repairs, used by the reconcilers (Celery beat) and `mirage_check --repair`.

Each repair is made through the transition functions and recorded in the
history with the reconciler as its actor and the reason in words; a repair
of a batch of chunks is one history row on their document.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q
from django.utils import timezone

from common import history
from documents import events
from documents.models import Chunk, Document
from documents.services.dispatch import dispatch_chunks, dispatch_job
from documents.services.finishing import _status_reason, document_chunk_counts, document_finalize
from documents.services.pausing import RESUMED_AT, paused_project_ids
from documents.services.transitions import chunks_transition, document_record_repair, document_transition
from documents.status import derive_document_status
from jobs import events as job_events
from jobs import services as job_services
from jobs.models import Job

logger = logging.getLogger(__name__)

DocStatus = Document.Status
ChunkStatus = Chunk.Status


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def chunks_redispatch_stuck(*, limit: int = 5000) -> dict[str, int]:
    """Send again the tasks of chunks whose worker died (`processing` past the
    lease) or whose message was lost (`pending`, last sent over a lease ago,
    or sent before the broker lost its data). A chunk out of attempts ends
    `error` with the reason."""
    actor = history.reconciler_actor("redispatch_stuck_chunks")
    now = timezone.now()
    lease = timedelta(seconds=settings.MIRAGE_CHUNK_LEASE_SECONDS)
    max_attempts = settings.MIRAGE_CHUNK_MAX_ATTEMPTS
    gave_up = 0
    # Paused work is not stuck: resume sends it again (services.pausing).
    paused = paused_project_ids()
    if paused is None:
        return {"lease_expired": 0, "pending_lost": 0, "gave_up": 0, "window_restarted": 0}
    indexing = Document.objects.filter(status=DocStatus.INDEXING).exclude(project_id__in=paused)
    with transaction.atomic():
        expired = list(
            Chunk.objects.select_for_update(skip_locked=True)
            .filter(status=ChunkStatus.PROCESSING, lease_expires_at__lt=now, document__in=indexing)
            .values_list("id", "attempts", "document_id")[:limit]
        )
        exhausted = [(chunk_id, doc_id) for chunk_id, attempts, doc_id in expired if attempts >= max_attempts]
        retry = [(chunk_id, doc_id) for chunk_id, attempts, doc_id in expired if attempts < max_attempts]
        if exhausted:
            gave_up = chunks_transition(
                chunks=Chunk.objects.filter(id__in=[chunk_id for chunk_id, _ in exhausted]),
                from_statuses=ChunkStatus.PROCESSING,
                to=ChunkStatus.ERROR,
                error=f"worker lost the chunk {max_attempts} times (lease of "
                f"{settings.MIRAGE_CHUNK_LEASE_SECONDS} s expired each time)",
                lease_expires_at=None,
            )
        chunks_transition(
            chunks=Chunk.objects.filter(id__in=[chunk_id for chunk_id, _ in retry]),
            from_statuses=ChunkStatus.PROCESSING,
            to=ChunkStatus.PENDING,
            lease_expires_at=None,
            dispatched_at=now,
        )
        lost_documents = events.documents_missing_dispatch_marker(
            indexing.filter(parsing_finished_at__isnull=False).values_list("id", "generation")
        )
        stale = Chunk.objects.select_for_update(skip_locked=True).filter(
            status=ChunkStatus.PENDING, document__in=indexing
        )
        # A run's chunks are sent when its parse commits (parsing_finished_at),
        # which for a long file is well after they were inserted.
        sent_over_a_lease_ago = stale.filter(
            dispatched_at__lt=now - lease, document__parsing_finished_at__lt=now - lease
        )
        lost = set(
            stale.filter(document_id__in=[doc_id for doc_id, _ in lost_documents]).values_list("id", "document_id")[
                :limit
            ]
        )
        unclaimed = set(sent_over_a_lease_ago.values_list("id", "document_id")[:limit]) - lost
        pending = sorted(lost | unclaimed)
        Chunk.objects.filter(id__in=[chunk_id for chunk_id, _ in pending]).update(dispatched_at=now)
        for doc_id, generation in lost_documents:
            transaction.on_commit(lambda d=doc_id, g=generation: events.mark_dispatched(document_id=d, generation=g))
        restarted = _windows_stalled(indexing, limit=limit)
        Chunk.objects.filter(id__in=[chunk_id for chunk_id, _ in restarted]).update(dispatched_at=now)
        _record_chunk_repairs(
            actor=actor,
            retry=retry,
            exhausted=exhausted,
            lost=lost,
            unclaimed=unclaimed,
            restarted=restarted,
            max_attempts=max_attempts,
        )
        to_send = [chunk_id for chunk_id, _ in retry + pending + restarted]
        if to_send:
            transaction.on_commit(lambda: dispatch_chunks(to_send))
    if expired or pending:
        logger.warning(
            "reconcile: re-dispatched %s chunks past their lease, %s pending chunks with no live task; "
            "%s chunks out of attempts set to error",
            len(retry),
            len(pending),
            gave_up,
        )
    return {
        "lease_expired": len(retry),
        "pending_lost": len(pending),
        "gave_up": gave_up,
        "window_restarted": len(restarted),
    }


def _windows_stalled(indexing, *, limit: int) -> list[tuple[int, int]]:
    """(chunk id, document id) of the next window of each document whose
    windowed dispatch stopped: chunks wait unsent (no `dispatched_at`) and
    none is in flight (sent and pending, or processing), e.g. every task of
    the window was lost after storing its result but before sending the
    next."""
    waiting = Chunk.objects.filter(document=OuterRef("pk"), status=ChunkStatus.PENDING, dispatched_at__isnull=True)
    in_flight = Chunk.objects.filter(document=OuterRef("pk")).filter(
        Q(status=ChunkStatus.PROCESSING) | Q(status=ChunkStatus.PENDING, dispatched_at__isnull=False)
    )
    stalled = (
        indexing.filter(parsing_finished_at__isnull=False)
        .filter(Exists(waiting))
        .exclude(Exists(in_flight))
        .values_list("id", flat=True)[:limit]
    )
    window = settings.MIRAGE_DISPATCH_WINDOW
    restarted = []
    for document_id in stalled:
        ids = (
            Chunk.objects.filter(document_id=document_id, status=ChunkStatus.PENDING, dispatched_at__isnull=True)
            .order_by("position")
            .values_list("id", flat=True)[:window]
        )
        restarted.extend((chunk_id, document_id) for chunk_id in ids)
    return restarted


def _record_chunk_repairs(*, actor: str, retry, exhausted, lost, unclaimed, restarted, max_attempts: int) -> None:
    """One history row per document and kind of repair."""
    by_kind = {
        "re-sent {} stranded by a dead worker (lease expired)": Counter(doc_id for _, doc_id in retry),
        "set {} to error: the worker was lost " + f"{max_attempts} times": Counter(doc_id for _, doc_id in exhausted),
        "re-sent {} whose messages Redis lost": Counter(doc_id for _, doc_id in lost),
        "re-sent {} that no worker took within a lease of being sent (message lost or queue backlog)": Counter(
            doc_id for _, doc_id in unclaimed
        ),
        "sent the next {} of a window whose tasks were all lost": Counter(doc_id for _, doc_id in restarted),
    }
    for template, per_document in by_kind.items():
        for document_id, count in per_document.items():
            document_record_repair(
                document_id=document_id, actor=actor, reason=template.format(_plural(count, "chunk"))
            )


def documents_finalize_settled() -> list[int]:
    """Finalize `indexing` documents whose chunks are all final (the chord
    callback was lost)."""
    actor = history.reconciler_actor("finalize_settled_documents")
    candidates = Document.objects.filter(status=DocStatus.INDEXING, parsing_finished_at__isnull=False)
    counts: dict[int, dict[str, int]] = {document_id: {} for document_id in candidates.values_list("id", flat=True)}
    rows = (
        Chunk.objects.filter(document__in=candidates).values("document_id", "status").annotate(n=Count("id"))
        if counts
        else []
    )
    for row in rows:
        counts.setdefault(row["document_id"], {})[row["status"]] = row["n"]
    finalized = []
    for document_id, document_counts in counts.items():
        derived = derive_document_status(document_counts)
        if derived != DocStatus.INDEXING:
            status = document_finalize(
                document_id=document_id,
                actor=actor,
                reason=f"every chunk had finished but the run's callback never came; finished as {derived}",
            )
            if status:
                logger.warning(
                    "reconcile: finalized document %s as %s (its chord callback was lost)", document_id, status
                )
                finalized.append(document_id)
    return finalized


# A run that ended this recently may still be doing its after-commit work
# in the process that ended it.
LOST_RUN_END_GRACE_SECONDS = 30


def lost_run_ends(*, now: datetime | None = None) -> list[int]:
    """Runs that ended (their document finished, was cancelled, deleted or
    began another run) but are still marked dispatched: the process that
    ended them died between its commit and its after-commit work. Publish
    the document's status and its job's (clients would otherwise see them
    running for ever) and forget the run's keys in Redis. Returns the
    documents whose run end was completed here."""
    runs = events.dispatched_runs()
    if not runs:
        return []
    now = now or timezone.now()
    documents = Document.objects.in_bulk({document_id for document_id, _ in runs})
    completed = []
    for document_id, generation in runs:
        document = documents.get(document_id)
        current = document is not None and document.generation == generation
        if current and document.status in Document.ACTIVE_STATUSES:
            continue  # the run goes on
        if current and document.updated_at > now - timedelta(seconds=LOST_RUN_END_GRACE_SECONDS):
            continue  # just ended: its own process may still be publishing
        if current:
            events.publish_document(document)
            if document.current_job_id:
                job_events.publish_job_id(document.current_job_id)
            logger.warning(
                "reconcile: document %s ended as %s without its after-commit work; events published again",
                document_id,
                document.status,
            )
        events.forget_run(document_id=document_id, generation=generation)
        completed.append(document_id)
    return completed


def chunks_fail_stranded(*, actor: str = history.SYSTEM) -> int:
    """Chunks left `pending` or `processing` in a document that already
    finished (not cancelled) can never run: say so."""
    stranded = Chunk.objects.filter(document__status__in=[DocStatus.READY, DocStatus.PARTIAL, DocStatus.ERROR])
    per_document = Counter(stranded.filter(status__in=Chunk.ACTIVE_STATUSES).values_list("document_id", flat=True))
    count = chunks_transition(
        chunks=stranded,
        from_statuses=Chunk.ACTIVE_STATUSES,
        to=ChunkStatus.ERROR,
        error="stranded: its document had already finished",
        lease_expires_at=None,
    )
    for document_id, stranded_count in per_document.items():
        document_record_repair(
            document_id=document_id,
            actor=actor,
            reason=f"set {_plural(stranded_count, 'stranded chunk')} to error: the document had already finished",
        )
    if count:
        logger.warning("repair: %s stranded chunks set to error", count)
    return count


def documents_rederive_disagreeing(*, actor: str = history.SYSTEM) -> list[int]:
    """Finished documents whose status disagrees with their chunks get the
    status their chunks say."""
    fixed = []
    finished = (DocStatus.READY, DocStatus.PARTIAL, DocStatus.ERROR)
    for document in Document.objects.filter(status__in=finished):
        counts = document_chunk_counts(document.id)
        if not counts and document.status == DocStatus.ERROR:
            continue
        derived = derive_document_status(counts)
        if derived == document.status or derived == DocStatus.INDEXING:
            continue
        message = _status_reason(derived, counts, document.id)
        moved = document_transition(
            document_id=document.id,
            from_statuses=document.status,
            to=derived,
            actor=actor,
            reason=f"its chunks say {derived}, not {document.status}",
            generation=document.generation,
            error_message=message,
        )
        if moved is not None:
            logger.warning("repair: document %s was %s, its chunks say %s", document.id, document.status, derived)
            fixed.append(document.id)
    return fixed


def documents_redispatch_unparsed() -> dict[str, int]:
    """Documents whose parse never ran or died: running job but the document
    still `pending` past the grace period, or `indexing` with no chunks past
    the parse lease. Sent again up to MIRAGE_MAX_DISPATCH_ATTEMPTS times, then
    failed with the reason. Documents `pending` with no live job are failed."""
    actor = history.reconciler_actor("redispatch_unparsed_documents")
    now = timezone.now()
    grace = now - timedelta(seconds=settings.MIRAGE_DISPATCH_GRACE_SECONDS)
    parse_lease = now - timedelta(seconds=settings.MIRAGE_PARSE_LEASE_SECONDS)
    resent = failed = 0
    paused = paused_project_ids()
    for document in Document.objects.filter(status__in=Document.ACTIVE_STATUSES).select_related("current_job"):
        job = document.current_job
        if paused is None or document.project_id in paused:
            continue  # paused work is not lost: resume sends it again
        if document.status == DocStatus.PENDING and (job is None or job.is_final):
            message = "the document was never dispatched (its job is gone or finished)"
            if document_transition(
                document_id=document.id,
                from_statuses=DocStatus.PENDING,
                to=DocStatus.ERROR,
                actor=actor,
                reason=message,
                generation=document.generation,
                error_message=message,
            ):
                logger.warning("reconcile: document %s was never dispatched; set to error", document.id)
                failed += 1
            continue
        if job is None or job.status != Job.Status.RUNNING:
            continue
        # A resumed job's deferred parse was sent at resume, not at admission.
        sent_at = max(filter(None, [job.started_at, _resumed_at(job)]), default=None)
        lost_before_parse = document.status == DocStatus.PENDING and sent_at and sent_at < grace
        lost_during_parse = (
            document.status == DocStatus.INDEXING
            and document.parsing_finished_at is None
            and document.parsing_started_at
            and document.parsing_started_at < parse_lease
        )
        if not (lost_before_parse or lost_during_parse):
            continue
        attempts = int(job.metadata.get("dispatch_attempts", 0))
        with transaction.atomic():
            if attempts >= settings.MIRAGE_MAX_DISPATCH_ATTEMPTS:
                message = f"the document was dispatched {attempts} times and never parsed"
                job_services.job_fail(job_id=job.id, error_type="dispatch_lost", error_message=message, actor=actor)
                document_transition(
                    document_id=document.id,
                    from_statuses=Document.ACTIVE_STATUSES,
                    to=DocStatus.ERROR,
                    actor=actor,
                    reason=message,
                    generation=document.generation,
                    error_message=message,
                )
                failed += 1
                logger.warning("reconcile: document %s never parsed after %s dispatches; failed", document.id, attempts)
                continue
            Job.objects.filter(id=job.id).update(metadata={**job.metadata, "dispatch_attempts": attempts + 1})
            reason = f"its parse was lost; sent again (dispatch {attempts + 2})"
            if document.status == DocStatus.INDEXING:
                # Let the next parse begin a fresh run.
                document_transition(
                    document_id=document.id,
                    from_statuses=DocStatus.INDEXING,
                    to=DocStatus.PENDING,
                    actor=actor,
                    reason=reason,
                    generation=document.generation,
                )
            else:
                document_record_repair(document_id=document.id, actor=actor, reason=reason)
            transaction.on_commit(lambda job=job: dispatch_job(job))
        resent += 1
        logger.warning("reconcile: re-dispatched the parse of document %s (job %s)", document.id, job.id)
    return {"parse_resent": resent, "never_dispatched_failed": failed}


def _resumed_at(job: Job):
    value = job.metadata.get(RESUMED_AT)
    return datetime.fromisoformat(value) if value else None
