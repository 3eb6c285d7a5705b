"""Reconcilers of the job platform, run by Celery beat."""

from celery import shared_task

from common.locks import try_advisory_lock
from jobs import services


@shared_task(name="reconcile.fail_timed_out_jobs", acks_late=True)
def fail_timed_out_jobs() -> int:
    with try_advisory_lock("reconcile.fail_timed_out_jobs") as acquired:
        return len(services.jobs_fail_timed_out()) if acquired else 0


@shared_task(name="reconcile.purge_finished_jobs", acks_late=True)
def purge_finished_jobs() -> int:
    with try_advisory_lock("reconcile.purge_finished_jobs") as acquired:
        return services.jobs_purge_finished() if acquired else 0


@shared_task(name="reconcile.admit_pending_jobs", acks_late=True)
def admit_pending_jobs() -> int:
    """Start waiting jobs whose admission was missed (e.g. the process that
    finished a job died before admitting the next)."""
    return len(services.jobs_admit_pending())
