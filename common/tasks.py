"""Reconciler of the history and audit log, run by Celery beat."""

from celery import shared_task

from common import history
from common.locks import try_advisory_lock


@shared_task(name="reconcile.purge_history", acks_late=True)
def purge_history() -> int:
    """Delete history and audit rows past MIRAGE_HISTORY_RETENTION_DAYS."""
    with try_advisory_lock("reconcile.purge_history") as acquired:
        return history.history_purge() if acquired else 0
