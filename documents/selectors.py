"""Reads. Every list of documents with progress is one query, however many
documents it holds."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

from django.db.models import Count, F, Min, Q, QuerySet

from documents.models import Chunk, Document, Project
from jobs import registry, timing


def documents_with_progress(queryset: QuerySet[Document] | None = None) -> QuerySet[Document]:
    """Annotate `chunks_total`, `chunks_processed` (chunks in a final state),
    a count per chunk status, and the current job's `queue_position`; the
    project and the current job come in the same query."""
    queryset = Document.objects.all() if queryset is None else queryset
    return _with_progress(queryset.select_related("project", "current_job"))


def documents_page_with_progress(ids: Sequence[int]) -> list[Document]:
    """The documents with these ids, in the order of `ids`, annotated as by
    documents_with_progress, with their current job but not their project
    (a page of the API list does not show it). One query that aggregates
    the chunks of these documents only; a document deleted since its id was
    read is left out."""
    if not ids:
        return []
    documents = _page_queryset(tuple(registry.limited_kinds())).filter(id__in=ids)
    by_id = {document.id: document for document in documents}
    return [by_id[document_id] for document_id in ids if document_id in by_id]


@functools.lru_cache(maxsize=4)
def _page_queryset(limited_kinds: tuple[str, ...]) -> QuerySet[Document]:
    """The annotated queryset a page filters, built once: building its nine
    annotations was about a third of the CPU of the query for a page. It is
    never evaluated itself (each page filters a clone of it, as a view's
    class-level queryset is). Keyed on the job kinds its queue-position
    subquery names."""
    return _with_progress(Document.objects.select_related("current_job"))


def _with_progress(queryset: QuerySet[Document]) -> QuerySet[Document]:
    per_status = {
        f"chunks_{status}": Count("chunks", filter=Q(chunks__status=status)) for status in Chunk.Status.values
    }
    annotated = queryset.annotate(
        chunks_total=Count("chunks"),
        chunks_processed=Count("chunks", filter=Q(chunks__status__in=Chunk.FINAL_STATUSES)),
        # When the run's first chunk became final: the ETA measures its
        # speed from there (the queue's latency before it is not speed).
        first_final_at=Min(
            "chunks__updated_at",
            filter=Q(chunks__status__in=Chunk.FINAL_STATUSES, chunks__updated_at__gte=F("parsing_finished_at")),
        ),
        **per_status,
    )
    return timing.with_queue_position(annotated, prefix="current_job__")


def eta_seconds(document: Document, *, now: datetime) -> float | None:
    """While the document is being embedded: its remaining chunks over the
    speed its own run has had so far (chunks that became final since its
    embedding began, per second). The speed is what the run really got from
    the queue and the workers it shares; None when there is no honest
    estimate yet (nothing finished yet, or not embedding)."""
    job = document.current_job
    started = document.parsing_finished_at
    if document.status != Document.Status.INDEXING or job is None or started is None:
        return None
    total = getattr(document, "chunks_total", 0)
    processed = getattr(document, "chunks_processed", 0)
    done = processed - int(job.metadata.get("chunks_final_at_start", 0))
    first = getattr(document, "first_final_at", None)
    if first is not None and done > 1:
        # Speed since the first chunk of the run became final.
        started, done = first, done - 1
    elapsed = (now - started).total_seconds()
    if done <= 0 or elapsed <= 0:
        return None
    return round((total - processed) * elapsed / done, 1)


def document_timing(document: Document, *, now: datetime) -> dict:
    """Waiting, working and ETA of an annotated document, from its current
    run's job (see jobs/timing.py for the terms)."""
    job = document.current_job
    if job is None:
        return {
            "queued_at": document.created_at,
            "waiting_seconds": None,
            "working_seconds": None,
            "queue_position": None,
            "eta_seconds": None,
        }
    if hasattr(document, "queue_position"):
        job.queue_position = document.queue_position
    return {**timing.job_timing(job, now=now), "eta_seconds": eta_seconds(document, now=now)}


def chunk_counts_of(document: Document) -> dict[str, int]:
    """The per-status counts of an annotated document."""
    return {status: getattr(document, f"chunks_{status}", 0) for status in Chunk.Status.values}


def progress_percent(document: Document) -> int:
    total = getattr(document, "chunks_total", 0)
    if document.status in (Document.Status.READY, Document.Status.PARTIAL):
        return 100
    # 100 is kept for a finished document: an indexing one says 99 at most.
    return min(99, 100 * getattr(document, "chunks_processed", 0) // total) if total else 0


def projects_for_user(user) -> QuerySet[Project]:
    if user.is_staff:
        return Project.objects.all()
    return Project.objects.filter(members=user)


def documents_for_user(user) -> QuerySet[Document]:
    if user.is_staff:
        return Document.objects.all()
    return Document.objects.filter(project__members=user)


def document_counts_by_status(project: Project) -> dict[str, int]:
    rows = Document.objects.filter(project=project).values("status").annotate(n=Count("id"))
    counts = {status: 0 for status in Document.Status.values}
    counts.update({row["status"]: row["n"] for row in rows})
    return counts
