"""Reads. Every list of documents with progress is one query, however many
documents it holds."""
from __future__ import annotations

from django.db.models import Count, Q, QuerySet

from documents.models import Chunk, Document, Project


def documents_with_progress(queryset: QuerySet[Document] | None = None) -> QuerySet[Document]:
    """Annotate `chunks_total`, `chunks_processed` (chunks in a final state)
    and a count per chunk status."""
    queryset = Document.objects.all() if queryset is None else queryset
    per_status = {
        f"chunks_{status}": Count("chunks", filter=Q(chunks__status=status)) for status in Chunk.Status.values
    }
    return queryset.annotate(
        chunks_total=Count("chunks"),
        chunks_processed=Count("chunks", filter=Q(chunks__status__in=Chunk.FINAL_STATUSES)),
        **per_status,
    ).select_related("project", "current_job")


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
