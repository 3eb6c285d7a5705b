"""Celery tasks: thin, idempotent, ids in and tiny values out."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings
from django.db import InterfaceError, OperationalError

from common.locks import try_advisory_lock
from documents import services

logger = logging.getLogger(__name__)

# The database may be restarting: wait and try again rather than lose the task.
DATABASE_ERRORS = (OperationalError, InterfaceError)
DB_RETRY = {
    "autoretry_for": DATABASE_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 30,
    "max_retries": None,
    "retry_jitter": True,
}


@shared_task(
    name="documents.parse_document",
    bind=True,
    acks_late=True,
    time_limit=settings.MIRAGE_PARSE_TIME_LIMIT_SECONDS,
    soft_time_limit=settings.MIRAGE_PARSE_TIME_LIMIT_SECONDS - 30,
    **DB_RETRY,
)
def parse_document(self, document_id: int, job_id: int) -> None:
    services.document_parse(document_id=document_id, job_id=job_id)


@shared_task(name="documents.retry_chunks", bind=True, acks_late=True, **DB_RETRY)
def retry_chunks(self, document_id: int, job_id: int) -> None:
    services.document_retry_chunks(document_id=document_id, job_id=job_id)


@shared_task(
    name="documents.embed_chunk",
    bind=True,
    acks_late=True,
    time_limit=settings.MIRAGE_EMBED_TIME_LIMIT_SECONDS,
    soft_time_limit=settings.MIRAGE_EMBED_TIME_LIMIT_SECONDS - 10,
    **DB_RETRY,
)
def embed_chunk(self, chunk_id: int) -> str:
    """Returns the chunk's status in one word (the chord callback receives
    every header's return value, so it stays tiny)."""
    outcome = services.chunk_embed(chunk_id=chunk_id, chord=self.request.chord, group_id=self.request.group)
    if outcome.retry_in is not None:
        # Countdowns stay far below the broker's visibility timeout.
        raise self.retry(countdown=outcome.retry_in, max_retries=None)
    return outcome.status


@shared_task(name="documents.migrate_embedder", bind=True, acks_late=True, **DB_RETRY)
def migrate_embedder(self, job_id: int) -> str:
    """One batch of a migration to another embedding model, then the next
    batch's task (or the switch). One task per job at a time: a duplicate
    (a redelivery, a reconciler's re-send) finds the job's lock taken and
    leaves the chain to the task that holds it."""
    with try_advisory_lock(f"documents.migrate_embedder:{job_id}") as acquired:
        if not acquired:
            return "busy"
        outcome = services.embedder_migration_step(job_id=job_id, attempt=self.request.retries)
    if outcome.status == "retry":
        # Countdowns stay far below the broker's visibility timeout.
        raise self.retry(countdown=outcome.retry_in, max_retries=None)
    if outcome.status in ("continue", "paused"):
        # Sent once the lock is released, so the next task can take it.
        services.dispatch_migration_step(job_id=job_id, countdown=outcome.retry_in)
    return outcome.status


@shared_task(name="documents.finalize_document", bind=True, acks_late=True, **DB_RETRY)
def finalize_document(self, document_id: int, generation: int) -> str | None:
    return services.document_finalize(document_id=document_id, generation=generation)


@shared_task(name="documents.import_directory", bind=True, acks_late=True, **DB_RETRY)
def import_directory(self, job_id: int) -> None:
    from documents import imports

    imports.import_run(job_id=job_id)


@shared_task(name="reconcile.finalize_settled_documents", acks_late=True)
def finalize_settled_documents() -> int:
    """Documents whose run ended without its callback, then runs that ended
    without their after-commit work; returns how many documents it mended."""
    with try_advisory_lock("reconcile.finalize_settled_documents") as acquired:
        if not acquired:
            return 0
        return len(services.documents_finalize_settled()) + len(services.lost_run_ends())


@shared_task(name="reconcile.redispatch_stuck_chunks", acks_late=True)
def redispatch_stuck_chunks() -> dict:
    with try_advisory_lock("reconcile.redispatch_stuck_chunks") as acquired:
        return services.chunks_redispatch_stuck() if acquired else {}


@shared_task(name="reconcile.redispatch_unparsed_documents", acks_late=True)
def redispatch_unparsed_documents() -> dict:
    with try_advisory_lock("reconcile.redispatch_unparsed_documents") as acquired:
        return services.documents_redispatch_unparsed() if acquired else {}


@shared_task(name="reconcile.repair_embedder_migrations", acks_late=True)
def repair_embedder_migrations() -> dict:
    with try_advisory_lock("reconcile.repair_embedder_migrations") as acquired:
        return services.embedder_migrations_repair() if acquired else {}


@shared_task(name="documents.deliver_webhook", bind=True, acks_late=True, **DB_RETRY)
def deliver_webhook(self, delivery_id: int) -> str | None:
    from documents.webhooks import services as webhooks

    return webhooks.delivery_attempt(delivery_id=delivery_id)


@shared_task(name="reconcile.send_due_webhook_deliveries", acks_late=True)
def send_due_webhook_deliveries() -> int:
    from documents.webhooks import services as webhooks

    with try_advisory_lock("reconcile.send_due_webhook_deliveries") as acquired:
        return webhooks.deliveries_send_due() if acquired else 0
