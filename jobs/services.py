"""Every change of a job's state, one function each.

Each transition is a conditional UPDATE on the job's current status, so two
workers racing (a late task and a cancel, two beat ticks) cannot both win,
and an illegal move such as `completed` -> `running` never happens.
"""
from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum, Value
from django.db.models.functions import Coalesce, Greatest, Least
from django.utils import timezone

from jobs import events, registry
from jobs.models import Job

logger = logging.getLogger(__name__)

Status = Job.Status

# Where each status may be entered from.
ALLOWED_SOURCES: dict[str, tuple[str, ...]] = {
    Status.RUNNING: (Status.PENDING,),
    Status.COMPLETED: (Status.RUNNING,),
    Status.FAILED: (Status.PENDING, Status.RUNNING),
    Status.CANCELLED: (Status.PENDING, Status.RUNNING),
}

# Serialises admission so that two finishing jobs never both take the last
# free slot. Any constant works; this one spells "MIRAGE".
_ADMISSION_LOCK_KEY = 0x4D4952414745


class IllegalJobTransition(Exception):
    pass


class JobAlreadyFinished(IllegalJobTransition):
    """Raised when cancelling a job that already ended; the message says how."""


def _transition(*, job_id: int, to: str, **fields) -> bool:
    """Move a job to `to` if its current status allows it. Returns whether it moved."""
    sources = ALLOWED_SOURCES[to]
    fields.setdefault("updated_at", timezone.now())
    moved = Job.objects.filter(id=job_id, status__in=sources).update(status=to, **fields)
    if moved:
        job = Job.objects.get(id=job_id)
        transaction.on_commit(lambda: events.publish_job(job))
        if job.parent_id and to in Job.FINAL_STATUSES:
            transaction.on_commit(lambda: job_rollup(parent_id=job.parent_id))
    return moved == 1


def job_create(
    *,
    kind: str,
    project_id: int | None = None,
    subject_id: int | None = None,
    metadata: dict | None = None,
    parent: Job | None = None,
    progress_message: str = "waiting for a free indexing slot",
) -> Job:
    """Create a `pending` job; it starts as soon as a slot is free (after commit)."""
    registry.handler_for(kind)  # fail early on an unknown kind
    job = Job.objects.create(
        kind=kind,
        project_id=project_id,
        subject_id=subject_id,
        metadata=metadata or {},
        parent=parent,
        progress_message=progress_message,
    )
    # Published before admission runs, so clients see `pending` before `running`.
    transaction.on_commit(lambda: events.publish_job(job))
    # Robust: a broker that does not answer must not fail the caller (an
    # upload) after its rows are committed; the reconcilers dispatch later.
    transaction.on_commit(jobs_admit_pending, robust=True)
    return job


def jobs_admit_pending() -> list[int]:
    """Start pending jobs, oldest first, while fewer than
    MIRAGE_MAX_CONCURRENT_INDEXING_JOBS limited jobs run. Safe to call from
    anywhere at any time; returns the ids it started."""
    started: list[Job] = []
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_ADMISSION_LOCK_KEY])
        limited = registry.limited_kinds()
        running = Job.objects.filter(status=Status.RUNNING, kind__in=limited).count()
        free = max(0, settings.MIRAGE_MAX_CONCURRENT_INDEXING_JOBS - running)
        candidates = list(
            Job.objects.filter(status=Status.PENDING, kind__in=limited).order_by("created_at", "id")[:free]
        ) + list(Job.objects.filter(status=Status.PENDING).exclude(kind__in=limited).order_by("created_at", "id"))
        now = timezone.now()
        for job in candidates:
            if _transition(job_id=job.id, to=Status.RUNNING, started_at=now, progress_message="starting"):
                job.status, job.started_at = Status.RUNNING, now
                started.append(job)
        for job in started:
            handler = registry.handler_for(job.kind)
            transaction.on_commit(lambda job=job, handler=handler: handler.run(job))
    return [job.id for job in started]


def job_set_progress(
    *, job_id: int, percentage: int, message: str = "", **counters: int
) -> bool:
    """Record progress of a running job. The percentage never goes backwards and
    stays below 100 until the job completes."""
    percentage = max(0, min(99, int(percentage)))
    fields = {
        "progress_percentage": Greatest(F("progress_percentage"), Value(percentage)),
        "updated_at": timezone.now(),
        **counters,
    }
    if message:
        fields["progress_message"] = message[:255]
    updated = Job.objects.filter(id=job_id, status=Status.RUNNING).update(**fields)
    if updated:
        transaction.on_commit(lambda: events.publish_job_id(job_id))
    return updated == 1


def job_set_task_ids(*, job_id: int, task_id: str = "", chord_id: str = "") -> None:
    fields = {}
    if task_id:
        fields["celery_task_id"] = task_id
    if chord_id:
        fields["celery_chord_id"] = chord_id
    Job.objects.filter(id=job_id).update(**fields)


def job_complete(*, job_id: int, message: str = "completed", **counters: int) -> bool:
    moved = _transition(
        job_id=job_id,
        to=Status.COMPLETED,
        progress_percentage=100,
        progress_message=message[:255],
        completed_at=timezone.now(),
        **counters,
    )
    if moved:
        transaction.on_commit(jobs_admit_pending)
    return moved


def job_fail(
    *, job_id: int, error_type: str, error_message: str, error_traceback: str = "", **counters: int
) -> bool:
    """End a job as failed. Its progress stays where the work stopped."""
    moved = _transition(
        job_id=job_id,
        to=Status.FAILED,
        error_type=error_type[:64],
        error_message=error_message,
        error_traceback=error_traceback,
        progress_message=f"failed: {error_message}"[:255],
        progress_percentage=Least(F("progress_percentage"), Value(99)),
        completed_at=timezone.now(),
        **counters,
    )
    if moved:
        transaction.on_commit(jobs_admit_pending)
    return moved


@transaction.atomic
def job_cancel(*, job_id: int) -> Job:
    """Cancel a pending or running job and stop its subject's work.

    Raises JobAlreadyFinished (with the reason) for a job that already ended.
    """
    job = Job.objects.select_for_update().get(id=job_id)
    if job.is_final:
        raise JobAlreadyFinished(f"job {job.id} already finished as {job.status}; only pending or running jobs can be cancelled")
    now = timezone.now()
    _transition(
        job_id=job.id,
        to=Status.CANCELLED,
        cancelled_at=now,
        completed_at=now,
        progress_message="cancelled",
    )
    handler = registry.handler_for(job.kind)
    job.refresh_from_db()
    if handler.cancel is not None:
        handler.cancel(job)
    for child in job.children.filter(status__in=Job.ACTIVE_STATUSES):
        job_cancel(job_id=child.id)
    transaction.on_commit(jobs_admit_pending)
    return job


def job_rollup(*, parent_id: int) -> None:
    """Carry the children's counters up to a parent job (an import) and end it
    once its scan finished and every child ended: `completed` when at least
    one child completed or there was nothing to do, `failed` otherwise."""
    with transaction.atomic():
        parent = Job.objects.select_for_update().filter(id=parent_id, status=Status.RUNNING).first()
        if parent is None:
            return
        totals = parent.children.aggregate(
            total=Count("id"),
            finished=Count("id", filter=Q(status__in=Job.FINAL_STATUSES)),
            completed=Count("id", filter=Q(status=Status.COMPLETED)),
            files_indexed=Coalesce(Sum("files_indexed"), 0),
            chunks_created=Coalesce(Sum("chunks_created"), 0),
            chunks_failed=Coalesce(Sum("chunks_failed"), 0),
        )
        counters = {key: totals[key] for key in ("files_indexed", "chunks_created", "chunks_failed")}
        total, finished = totals["total"], totals["finished"]
        skipped = len(parent.metadata.get("skipped", []))
        message = f"indexed {finished}/{total} files" + (f", {skipped} skipped" if skipped else "")
        if not parent.metadata.get("scan_finished") or finished < total:
            job_set_progress(job_id=parent_id, percentage=int(100 * finished / max(total, 1)),
                             message=message, **counters)
            return
        if totals["completed"] or (total == 0 and not skipped):
            job_complete(job_id=parent_id, message=message or "nothing to import", **counters)
        else:
            job_fail(job_id=parent_id, error_type="import_failed",
                     error_message=f"no file could be indexed ({total} failed, {skipped} skipped)", **counters)


def jobs_fail_timed_out(*, now=None) -> list[int]:
    """Fail running jobs older than MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS."""
    now = now or timezone.now()
    limit = settings.MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS
    cutoff = now - timedelta(seconds=limit)
    failed = []
    for job in Job.objects.filter(status=Status.RUNNING, started_at__lt=cutoff):
        with transaction.atomic():
            job = Job.objects.select_for_update().get(id=job.id)
            if job.status != Status.RUNNING:
                continue
            handler = registry.handler_for(job.kind)
            if job_fail(
                job_id=job.id,
                error_type="timeout",
                error_message=f"job ran longer than MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS ({limit} s)",
            ):
                job.refresh_from_db()
                if handler.cancel is not None:
                    handler.cancel(job)
                logger.warning("reconcile: job %s timed out after %s s", job.id, limit)
                failed.append(job.id)
    return failed


def jobs_purge_finished(*, now=None) -> int:
    """Delete finished jobs older than MIRAGE_JOB_RETENTION_DAYS."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.MIRAGE_JOB_RETENTION_DAYS)
    deleted, _ = Job.objects.filter(status__in=Job.FINAL_STATUSES, completed_at__lt=cutoff).delete()
    if deleted:
        logger.info("reconcile: purged %s finished jobs older than %s days", deleted, settings.MIRAGE_JOB_RETENTION_DAYS)
    return deleted
