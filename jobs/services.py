"""Every change of a job's state, one function each; its status changes in
exactly one place, `job_transition`.

Each transition is a conditional UPDATE on the job's current status, so two
workers racing (a late task and a cancel, two beat ticks) cannot both win,
and an illegal move such as `completed` -> `running` is refused with an
error. Every change is recorded in the job's history and published on
commit.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Q, Sum, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Greatest, Least
from django.utils import timezone

from common import history, signals
from jobs import admission, events, registry
from jobs.models import Job

logger = logging.getLogger(__name__)

Status = Job.Status

# The table of allowed transitions: each status, and the statuses it may be
# entered from. A job is created `pending`; the final statuses are never
# left.
JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    Status.RUNNING: frozenset({Status.PENDING}),
    Status.COMPLETED: frozenset({Status.RUNNING}),
    Status.FAILED: frozenset({Status.PENDING, Status.RUNNING}),
    Status.CANCELLED: frozenset({Status.PENDING, Status.RUNNING}),
}

# Serialises admission so that two finishing jobs never both take the last
# free slot. Any constant works; this one spells "MIRAGE".
_ADMISSION_LOCK_KEY = 0x4D4952414745


class IllegalJobTransition(Exception):
    """A transition the table does not allow; the message names the job, the
    from and the to status."""


class JobAlreadyFinished(IllegalJobTransition):
    """Raised when cancelling a job that already ended; the message says how."""


def check_job_transition(*, job_id: int | None, from_statuses, to: str) -> None:
    allowed = JOB_TRANSITIONS.get(to, frozenset())
    for source in from_statuses:
        if source not in allowed:
            raise IllegalJobTransition(f"job {job_id}: illegal status transition {source} -> {to}")


def job_transition(*, job_id: int, from_statuses, to: str, actor: str, reason: str = "", **fields) -> bool:
    """The only writer of Job.status. Moves the job from any of
    `from_statuses` to `to`; raises IllegalJobTransition when the table does
    not allow one of those moves, and returns False (nothing written) when
    the job is no longer in one of them (another writer won the race).
    Records the change in the job's history and publishes it on commit."""
    from_statuses = (from_statuses,) if isinstance(from_statuses, str) else tuple(from_statuses)
    check_job_transition(job_id=job_id, from_statuses=from_statuses, to=to)
    now = timezone.now()
    fields.setdefault("updated_at", now)
    with transaction.atomic():
        previous = (
            Job.objects.select_for_update()
            .filter(id=job_id, status__in=from_statuses)
            .values_list("status", flat=True)
            .first()
        )
        if previous is None:
            return False
        Job.objects.filter(id=job_id).update(status=to, **fields)
        job = Job.objects.get(id=job_id)
        history.status_change_record(
            entity="job",
            entity_id=job.id,
            project_id=job.project_id,
            from_status=previous,
            to_status=to,
            actor=actor,
            reason=reason,
            job_id=job.id,
        )
        transaction.on_commit(lambda: events.publish_job(job))
        signals.job_status_changed.send(sender=Job, job=job, previous=previous)
        if job.parent_id and to in Job.FINAL_STATUSES:
            transaction.on_commit(lambda: job_rollup(parent_id=job.parent_id))
    return True


def job_create(
    *,
    kind: str,
    project_id: int | None = None,
    subject_id: int | None = None,
    metadata: dict | None = None,
    parent: Job | None = None,
    priority: str = Job.Priority.NORMAL,
    progress_message: str = "waiting for a free indexing slot",
    actor: str = history.SYSTEM,
    reason: str = "",
) -> Job:
    """Create a `pending` job; it starts as soon as a slot is free (after commit)."""
    handler = registry.handler_for(kind)  # fail early on an unknown kind
    job = Job.objects.create(
        kind=kind,
        project_id=project_id,
        subject_id=subject_id,
        metadata=metadata or {},
        parent=parent,
        priority=priority,
        progress_message=progress_message,
    )
    history.status_change_record(
        entity="job",
        entity_id=job.id,
        project_id=project_id,
        from_status="",
        to_status=Status.PENDING,
        actor=actor,
        reason=reason or f"created: {handler.label.lower()}",
        job_id=job.id,
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
        # Priority, then fair share across projects; paused projects wait (jobs.admission).
        order = admission.admission_candidates(limited_kinds=limited, free=free)
        by_id = Job.objects.in_bulk(order)
        candidates = [by_id[job_id] for job_id in order]
        now = timezone.now()
        for job in candidates:
            if job_transition(
                job_id=job.id,
                from_statuses=Status.PENDING,
                to=Status.RUNNING,
                actor=history.SYSTEM,
                reason="admitted: an indexing slot was free",
                started_at=now,
                progress_message="starting",
            ):
                job.status, job.started_at = Status.RUNNING, now
                started.append(job)
        for job in started:
            handler = registry.handler_for(job.kind)
            transaction.on_commit(lambda job=job, handler=handler: handler.run(job))
    return [job.id for job in started]


def job_set_progress(*, job_id: int, percentage: int, message: str = "", **counters: int) -> bool:
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


def job_update_metadata(*, job_id: int, **values) -> None:
    """Merge `values` into the job's metadata in one statement."""
    Job.objects.filter(id=job_id).update(metadata=RawSQL("metadata || %s::jsonb", [json.dumps(values)]))


def job_mark_working(*, job_id: int) -> None:
    """Record when a worker first took the job's work (once)."""
    Job.objects.filter(id=job_id, work_started_at__isnull=True).update(work_started_at=timezone.now())


def job_set_task_ids(*, job_id: int, task_id: str = "", chord_id: str = "") -> None:
    fields = {}
    if task_id:
        fields["celery_task_id"] = task_id
    if chord_id:
        fields["celery_chord_id"] = chord_id
    Job.objects.filter(id=job_id).update(**fields)


def job_complete(*, job_id: int, message: str = "completed", actor: str = history.WORKER, **counters: int) -> bool:
    moved = job_transition(
        job_id=job_id,
        from_statuses=Status.RUNNING,
        to=Status.COMPLETED,
        actor=actor,
        reason=message,
        progress_percentage=100,
        progress_message=message[:255],
        completed_at=timezone.now(),
        **counters,
    )
    if moved:
        transaction.on_commit(jobs_admit_pending)
    return moved


def job_fail(
    *,
    job_id: int,
    error_type: str,
    error_message: str,
    error_traceback: str = "",
    actor: str = history.WORKER,
    **counters: int,
) -> bool:
    """End a job as failed. Its progress stays where the work stopped."""
    moved = job_transition(
        job_id=job_id,
        from_statuses=(Status.PENDING, Status.RUNNING),
        to=Status.FAILED,
        actor=actor,
        reason=f"{error_type}: {error_message}",
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
def job_cancel(*, job_id: int, actor: str = history.SYSTEM, reason: str = "cancelled") -> Job:
    """Cancel a pending or running job and stop its subject's work.

    Raises JobAlreadyFinished (with the reason) for a job that already ended.
    """
    job = Job.objects.select_for_update().get(id=job_id)
    if job.is_final:
        raise JobAlreadyFinished(
            f"job {job.id} already finished as {job.status}; only pending or running jobs can be cancelled"
        )
    now = timezone.now()
    job_transition(
        job_id=job.id,
        from_statuses=Job.ACTIVE_STATUSES,
        to=Status.CANCELLED,
        actor=actor,
        reason=reason,
        cancelled_at=now,
        completed_at=now,
        progress_message="cancelled",
    )
    handler = registry.handler_for(job.kind)
    job.refresh_from_db()
    if handler.cancel is not None:
        handler.cancel(job, actor=actor, reason=reason)
    for child in job.children.filter(status__in=Job.ACTIVE_STATUSES):
        job_cancel(job_id=child.id, actor=actor, reason=f"{reason} (its import was cancelled)")
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
            job_set_progress(
                job_id=parent_id, percentage=int(100 * finished / max(total, 1)), message=message, **counters
            )
            return
        if totals["completed"] or (total == 0 and not skipped):
            job_complete(job_id=parent_id, message=message or "nothing to import", actor=history.SYSTEM, **counters)
        else:
            job_fail(
                job_id=parent_id,
                error_type="import_failed",
                actor=history.SYSTEM,
                error_message=f"no file could be indexed ({total} failed, {skipped} skipped)",
                **counters,
            )


def jobs_fail_timed_out(*, now=None) -> list[int]:
    """Fail running jobs older than MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS (time
    spent paused does not count)."""
    now = now or timezone.now()
    limit = settings.MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS
    cutoff = now - timedelta(seconds=limit)
    failed = []
    for job in Job.objects.filter(id__in=admission.timed_out_candidates(cutoff=cutoff)):
        with transaction.atomic():
            job = Job.objects.select_for_update().get(id=job.id)
            if job.status != Status.RUNNING:
                continue
            handler = registry.handler_for(job.kind)
            actor = history.reconciler_actor("fail_timed_out_jobs")
            if job_fail(
                job_id=job.id,
                error_type="timeout",
                error_message=f"job ran longer than MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS ({limit} s)",
                actor=actor,
            ):
                job.refresh_from_db()
                if handler.cancel is not None:
                    handler.cancel(job, actor=actor, reason=job.error_message)
                logger.warning("reconcile: job %s timed out after %s s", job.id, limit)
                failed.append(job.id)
    return failed


def jobs_purge_finished(*, now=None) -> int:
    """Delete finished jobs older than MIRAGE_JOB_RETENTION_DAYS."""
    now = now or timezone.now()
    cutoff = now - timedelta(days=settings.MIRAGE_JOB_RETENTION_DAYS)
    deleted, _ = Job.objects.filter(status__in=Job.FINAL_STATUSES, completed_at__lt=cutoff).delete()
    if deleted:
        logger.info(
            "reconcile: purged %s finished jobs older than %s days", deleted, settings.MIRAGE_JOB_RETENTION_DAYS
        )
    return deleted
