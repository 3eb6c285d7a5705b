"""The invariant checker: every place where a status disagrees with the
facts. Used by `manage.py mirage_check` and by the tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, F, Max, Q
from django.utils import timezone

from documents import jobkinds
from documents.models import Chunk, Document, Project
from documents.status import derive_document_status
from jobs import registry
from jobs.models import Job


@dataclass(frozen=True)
class Violation:
    kind: str
    model: str
    object_id: int
    detail: str

    def __str__(self) -> str:
        return f"{self.model} {self.object_id}: {self.kind}: {self.detail}"


def _counts_by_document(document_ids) -> dict[int, dict[str, int]]:
    counts: dict[int, dict[str, int]] = {}
    rows = Chunk.objects.filter(document_id__in=document_ids).values("document_id", "status").annotate(n=Count("id"))
    for row in rows:
        counts.setdefault(row["document_id"], {})[row["status"]] = row["n"]
    return counts


def find_violations(*, grace_seconds: float | None = None) -> list[Violation]:
    """Everything that is stuck or untrue now. Work younger than
    `grace_seconds` (default: two reconcile periods) is in flight, not stuck."""
    now = timezone.now()
    grace = timedelta(
        seconds=grace_seconds if grace_seconds is not None else 2 * settings.MIRAGE_RECONCILE_INTERVAL_SECONDS
    )
    violations: list[Violation] = []

    finished = Document.objects.filter(
        status__in=[Document.Status.READY, Document.Status.PARTIAL, Document.Status.ERROR]
    )
    documents = list(finished.values_list("id", "status"))
    counts = _counts_by_document([doc_id for doc_id, _ in documents])
    for doc_id, status in documents:
        doc_counts = counts.get(doc_id, {})
        derived = derive_document_status(doc_counts)
        if status == Document.Status.ERROR and not doc_counts:
            continue  # parse errors have no chunks, and say so
        if derived != status:
            violations.append(
                Violation(
                    "status_disagrees", "document", doc_id, f"status {status} but chunks say {derived} {doc_counts}"
                )
            )

    indexing = Document.objects.filter(status=Document.Status.INDEXING, updated_at__lt=now - grace).annotate(
        last_chunk_change=Max("chunks__updated_at")
    )
    indexing_ids = list(indexing.values_list("id", flat=True))
    indexing_counts = _counts_by_document(indexing_ids)
    for document in indexing:
        doc_counts = indexing_counts.get(document.id, {})
        settled = doc_counts and derive_document_status(doc_counts) != Document.Status.INDEXING
        if settled and document.last_chunk_change and document.last_chunk_change < now - grace:
            violations.append(
                Violation("not_finalized", "document", document.id, f"all chunks final {doc_counts} but still indexing")
            )

    stuck_pending = Document.objects.filter(status=Document.Status.PENDING, created_at__lt=now - grace).filter(
        Q(current_job__isnull=True) | ~Q(current_job__status__in=Job.ACTIVE_STATUSES)
    )
    for doc_id in stuck_pending.values_list("id", flat=True):
        violations.append(Violation("never_dispatched", "document", doc_id, "pending with no active job"))

    for chunk_id, lease in Chunk.objects.filter(
        status=Chunk.Status.PROCESSING, lease_expires_at__lt=now - grace
    ).values_list("id", "lease_expires_at"):
        violations.append(
            Violation("lease_expired", "chunk", chunk_id, f"processing past its lease ({lease:%H:%M:%S})")
        )

    stranded = Chunk.objects.filter(status__in=Chunk.ACTIVE_STATUSES).exclude(
        document__status__in=[Document.Status.INDEXING, Document.Status.CANCELLED]
    )
    for chunk_id, status, doc_status in stranded.values_list("id", "status", "document__status"):
        violations.append(Violation("stranded", "chunk", chunk_id, f"{status} in a {doc_status} document"))

    timeout = timedelta(seconds=settings.MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS)
    for job_id in Job.objects.filter(
        status=Job.Status.RUNNING, started_at__lt=now - timeout - grace, kind__in=registry.timed_kinds()
    ).values_list("id", flat=True):
        violations.append(Violation("timed_out", "job", job_id, "running past MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS"))

    for doc_id, doc_status, job_id, job_status, error_type in Document.objects.filter(
        current_job__isnull=False, updated_at__lt=now - grace
    ).values_list("id", "status", "current_job_id", "current_job__status", "current_job__error_type"):
        # A timed-out job failed, yet what it embedded stays usable.
        timed_out = job_status == Job.Status.FAILED and error_type == "timeout"
        if (
            doc_status in (Document.Status.READY, Document.Status.PARTIAL)
            and job_status != Job.Status.COMPLETED
            and not timed_out
        ):
            violations.append(
                Violation("job_disagrees", "job", job_id, f"{job_status} but document {doc_id} is {doc_status}")
            )
        if doc_status == Document.Status.ERROR and job_status == Job.Status.COMPLETED:
            violations.append(Violation("job_disagrees", "job", job_id, f"completed but document {doc_id} is error"))
        if doc_status in Document.FINAL_STATUSES and job_status in Job.ACTIVE_STATUSES:
            violations.append(
                Violation("job_disagrees", "job", job_id, f"{job_status} but document {doc_id} is {doc_status}")
            )
    violations.extend(_embedder_violations(now=now, grace=grace))
    return violations


def _embedder_violations(*, now, grace: timedelta) -> list[Violation]:
    """A search reads only its project's model's vectors: a searchable chunk
    of another model is invisible to it. Migrations must progress or end,
    and a project names a next model only while its migration runs."""
    violations = []
    foreign = Chunk.objects.filter(status__in=[Chunk.Status.READY, Chunk.Status.CORRUPTED]).exclude(
        embedding_model=F("document__project__embedding_model")
    )
    for chunk_id, model, project_model in foreign.values_list(
        "id", "embedding_model", "document__project__embedding_model"
    )[:1000]:
        violations.append(
            Violation("foreign_model", "chunk", chunk_id, f"embedded by {model}, its project uses {project_model}")
        )
    lease = timedelta(seconds=settings.MIRAGE_CHUNK_LEASE_SECONDS)
    for job_id in Job.objects.filter(
        kind=jobkinds.MIGRATE_EMBEDDER, status=Job.Status.RUNNING, updated_at__lt=now - lease - grace
    ).values_list("id", flat=True):
        violations.append(Violation("migration_stalled", "job", job_id, "no progress for longer than a chunk lease"))
    orphaned = Project.objects.exclude(next_embedder="").filter(
        Q(embedder_job__isnull=True) | Q(embedder_job__status__in=Job.FINAL_STATUSES)
    )
    for project_id, model in orphaned.values_list("id", "next_embedding_model"):
        violations.append(
            Violation("migration_orphaned", "project", project_id, f"moving to {model} without a running job")
        )
    return violations


def repair() -> dict[str, object]:
    """Run every repair the reconcilers know, then re-derive finished
    documents whose status disagrees with their chunks."""
    from documents import services
    from jobs import services as job_services

    report: dict[str, object] = {
        "timed_out_jobs": job_services.jobs_fail_timed_out(),
        "redispatched": services.chunks_redispatch_stuck(),
        "unparsed": services.documents_redispatch_unparsed(),
        "finalized": services.documents_finalize_settled(),
        "rederived": services.documents_rederive_disagreeing(),
        "stranded_chunks": services.chunks_fail_stranded(),
        "admitted": job_services.jobs_admit_pending(),
        "embedder_migrations": services.embedder_migrations_repair(),
    }
    return report
