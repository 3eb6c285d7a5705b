"""How long a job waited and worked, and where it stands in the queue.

- queued_at: when it was submitted (created);
- waiting_seconds: from submission to the first work on it (a worker took
  it), or until now while nobody has;
- working_seconds: from the first work to its end, or until now; null
  before any work;
- queue_position: while `pending`, how many waiting jobs that take an
  indexing slot are ahead of it (they are admitted first); null otherwise.
"""

from __future__ import annotations

from datetime import datetime

from django.db.models import Count, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce

from jobs import registry
from jobs.models import Job


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 1)


def with_queue_position(queryset: QuerySet, *, prefix: str = "") -> QuerySet:
    """Annotate `queue_position` (the jobs ahead of a pending job) in the
    same query; `prefix` reaches the job through a relation
    (`current_job__`)."""
    ahead = (
        Job.objects.filter(status=Job.Status.PENDING, kind__in=registry.limited_kinds())
        .filter(
            Q(created_at__lt=OuterRef(f"{prefix}created_at"))
            | Q(created_at=OuterRef(f"{prefix}created_at"), id__lt=OuterRef(f"{prefix}id"))
        )
        .order_by()
        .values("status")
        .annotate(ahead=Count("id"))
        .values("ahead")
    )
    return queryset.annotate(queue_position=Coalesce(Subquery(ahead), 0))


def queue_position_of(job: Job) -> int | None:
    if job.status != Job.Status.PENDING:
        return None
    annotated = getattr(job, "queue_position", None)
    if annotated is not None:
        return annotated
    return with_queue_position(Job.objects.filter(id=job.id)).values_list("queue_position", flat=True).first()


def job_timing(job: Job, *, now: datetime) -> dict:
    end = job.completed_at or now
    return {
        "queued_at": job.created_at,
        "waiting_seconds": _seconds(job.created_at, job.work_started_at or end),
        "working_seconds": _seconds(job.work_started_at, end),
        "queue_position": queue_position_of(job),
    }
