"""Webhooks: managing them, recording the deliveries owed, and attempting
them.

Deliveries are a durable outbox: the row is written in the transaction of
the change it announces (a status change that rolls back owes nothing),
and a task per delivery is sent once that transaction commits. Failed
attempts are retried with exponential backoff and jitter for at least
MIRAGE_WEBHOOK_RETRY_HOURS. The time of the next attempt lives in
PostgreSQL, not in a Celery countdown: the beat reconciler
`reconcile.send_due_webhook_deliveries` sends what is due, and only short
waits use a countdown (a long ETA in Redis outlives the broker's
visibility timeout and is delivered twice).
"""

from __future__ import annotations

import json
import logging
import random
import time
from datetime import timedelta

import kombu.exceptions
import redis
from celery import signature
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from common import history
from documents.webhooks import network, signing
from documents.webhooks.models import Webhook, WebhookAttempt, WebhookDelivery

logger = logging.getLogger(__name__)

DeliveryState = WebhookDelivery.State
DOCUMENT_FINAL = "document.final"
JOB_FINAL = "job.final"
DOCUMENT_DELETED = "document.deleted"
DELIVER_TASK = "documents.deliver_webhook"
# How long the "which projects have webhooks" answer is trusted. A webhook
# created in another process receives events from at most this long after.
LOOKUP_TTL_SECONDS = 5.0
# Waits up to this long ride on a Celery countdown; longer ones wait for
# the reconciler.
SHORT_WAIT_SECONDS = 30.0

_lookup: dict[int, tuple[float, list[tuple[int, list[str]]]]] = {}


class WebhookInactive(Exception):
    """A redelivery to a webhook that is disabled or switched off."""


# --- Managing webhooks -------------------------------------------------------------


def webhook_create(
    *, project, url: str, events: list[str], description: str = "", active: bool = True, actor: str
) -> Webhook:
    """A new webhook with a new secret (the caller shows it once)."""
    network.check_url_syntax(url)
    with transaction.atomic():
        webhook = Webhook.objects.create(
            project=project,
            url=url,
            events=sorted(set(events)),
            description=description,
            active=active,
            secret=signing.new_secret(),
        )
        history.audit_record(
            project_id=project.id,
            actor=actor,
            action="webhook.created",
            target=f"webhook {webhook.id} {url}",
            webhook_id=webhook.id,
            events=webhook.events,
        )
    _forget(project.id)
    return webhook


def webhook_update(*, webhook: Webhook, actor: str, **changes) -> Webhook:
    """Change url, events, description or active. Switching a disabled
    webhook back on clears its failure record."""
    if "url" in changes:
        network.check_url_syntax(changes["url"])
    if "events" in changes:
        changes["events"] = sorted(set(changes["events"]))
    if changes.get("active") and not webhook.active:
        changes.update(failing_since=None, disabled_at=None, disabled_reason="")
    with transaction.atomic():
        for name, value in changes.items():
            setattr(webhook, name, value)
        webhook.save()
        history.audit_record(
            project_id=webhook.project_id,
            actor=actor,
            action="webhook.updated",
            target=f"webhook {webhook.id} {webhook.url}",
            webhook_id=webhook.id,
            changed=sorted(changes),
        )
    _forget(webhook.project_id)
    return webhook


def webhook_delete(*, webhook: Webhook, actor: str) -> None:
    with transaction.atomic():
        history.audit_record(
            project_id=webhook.project_id,
            actor=actor,
            action="webhook.deleted",
            target=f"webhook {webhook.id} {webhook.url}",
            webhook_id=webhook.id,
        )
        webhook.delete()
    _forget(webhook.project_id)


def _forget(project_id: int) -> None:
    _lookup.pop(project_id, None)


def _subscribers(project_id: int, event_type: str) -> list[int]:
    """Ids of the project's active webhooks for `event_type`, from a short
    per-process cache: a status change in a project without webhooks costs
    no query most of the time."""
    now = time.monotonic()
    cached = _lookup.get(project_id)
    if cached is None or cached[0] < now:
        rows = list(Webhook.objects.filter(project_id=project_id, active=True).values_list("id", "events"))
        cached = (now + LOOKUP_TTL_SECONDS, rows)
        _lookup[project_id] = cached
    return [webhook_id for webhook_id, events in cached[1] if event_type in events]


# --- Events -> deliveries ------------------------------------------------------------


def on_document_status_changed(*, document, previous: str, **_) -> None:
    from documents.models import Document
    from documents.services.finishing import document_chunk_counts

    if document.status not in Document.FINAL_STATUSES or document.status == previous:
        return
    if not _subscribers(document.project_id, DOCUMENT_FINAL):
        return
    deliveries_record(
        project_id=document.project_id,
        event_type=DOCUMENT_FINAL,
        data={
            "id": document.id,
            "project_id": document.project_id,
            "filename": document.filename,
            "status": document.status,
            "previous_status": previous,
            "error_message": document.error_message,
            "job_id": document.current_job_id,
            "chunk_counts": document_chunk_counts(document.id),
            "links": {
                "document": f"/api/v1/documents/{document.id}/",
                "chunks": f"/api/v1/documents/{document.id}/chunks/",
                "history": f"/api/v1/documents/{document.id}/history/",
            },
        },
    )


def on_job_status_changed(*, job, previous: str, **_) -> None:
    if job.project_id is None or job.status not in job.FINAL_STATUSES:
        return
    if not _subscribers(job.project_id, JOB_FINAL):
        return
    deliveries_record(
        project_id=job.project_id,
        event_type=JOB_FINAL,
        data={
            "id": job.id,
            "project_id": job.project_id,
            "kind": job.kind,
            "status": job.status,
            "previous_status": previous,
            "subject_id": job.subject_id,
            "files_indexed": job.files_indexed,
            "chunks_created": job.chunks_created,
            "chunks_failed": job.chunks_failed,
            "error_type": job.error_type,
            "error_message": job.error_message,
            "links": {"job": f"/api/v1/jobs/{job.id}/", "history": f"/api/v1/jobs/{job.id}/history/"},
        },
    )


def on_document_deleted(*, data: dict, **_) -> None:
    if not _subscribers(data["project_id"], DOCUMENT_DELETED):
        return
    deliveries_record(
        project_id=data["project_id"],
        event_type=DOCUMENT_DELETED,
        data={
            "id": data["id"],
            "project_id": data["project_id"],
            "filename": data["filename"],
            "links": {"audit": f"/api/v1/projects/{data['project_id']}/audit/"},
        },
    )


def connect_signals() -> None:
    from common import signals

    signals.document_status_changed.connect(on_document_status_changed, dispatch_uid="webhooks.document")
    signals.job_status_changed.connect(on_job_status_changed, dispatch_uid="webhooks.job")
    signals.document_deleted.connect(on_document_deleted, dispatch_uid="webhooks.deleted")


def deliveries_record(*, project_id: int, event_type: str, data: dict) -> list[int]:
    """One delivery per active webhook of the project subscribed to
    `event_type`, in the caller's transaction; their tasks go out on commit."""
    now = timezone.now()
    webhooks = list(
        Webhook.objects.filter(project_id=project_id, active=True, events__contains=[event_type]).values_list(
            "id", flat=True
        )
    )
    body = json.dumps({"type": event_type, "timestamp": now.isoformat(), "data": data}, default=str)
    created = WebhookDelivery.objects.bulk_create(
        [
            WebhookDelivery(
                webhook_id=webhook_id,
                message_id=signing.new_message_id(),
                event_type=event_type,
                body=body,
                next_attempt_at=now,
            )
            for webhook_id in webhooks
        ]
    )
    ids = [delivery.id for delivery in created]
    if ids:
        transaction.on_commit(lambda: _send_tasks(ids))
    return ids


def _send_tasks(ids, *, countdown: float | None = None) -> None:
    for delivery_id in ids:
        try:
            signature(DELIVER_TASK, args=[delivery_id]).apply_async(countdown=countdown)
        except (kombu.exceptions.KombuError, redis.RedisError, OSError) as exc:  # the reconciler sends it later
            logger.warning("webhook delivery %s not sent now (the reconciler will): %s", delivery_id, exc)


# --- Attempts --------------------------------------------------------------------------


def _lease_seconds() -> float:
    return settings.MIRAGE_WEBHOOK_TIMEOUT_SECONDS * (network.MAX_REDIRECTS + 1) + 30


_CLAIM_SQL = """
UPDATE documents_webhookdelivery
   SET attempt_count = attempt_count + 1, next_attempt_at = clock_timestamp() + make_interval(secs => %s)
 WHERE id = %s AND state = 'pending' AND next_attempt_at <= clock_timestamp()
RETURNING attempt_count
"""


def retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number `attempt` (1, 2, ...):
    doubling from MIRAGE_WEBHOOK_RETRY_BASE_SECONDS up to
    MIRAGE_WEBHOOK_RETRY_MAX_DELAY_SECONDS, with +-25 % jitter so that
    receivers coming back are not hit by every retry at once."""
    delay = min(
        settings.MIRAGE_WEBHOOK_RETRY_BASE_SECONDS * 2 ** (attempt - 1), settings.MIRAGE_WEBHOOK_RETRY_MAX_DELAY_SECONDS
    )
    return delay * random.uniform(0.75, 1.25)


def delivery_attempt(*, delivery_id: int) -> str | None:
    """Attempt one delivery, if it is pending and due (a duplicate task, or
    one overtaken by another sender, does nothing). Returns its state after."""
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [_lease_seconds(), delivery_id])
        row = cursor.fetchone()
    if row is None:
        return None
    number = row[0]
    delivery = WebhookDelivery.objects.select_related("webhook").get(id=delivery_id)
    webhook = delivery.webhook
    if not webhook.active:
        _delivery_finish(delivery, state=DeliveryState.FAILED, error="the webhook is switched off or disabled")
        return DeliveryState.FAILED
    timestamp = int(time.time())
    outcome = network.post(
        url=webhook.url,
        body=delivery.body,
        headers=signing.headers(
            secret=webhook.secret, message_id=delivery.message_id, timestamp=timestamp, body=delivery.body
        ),
    )
    return _attempt_record(delivery=delivery, number=number, outcome=outcome)


@transaction.atomic
def _attempt_record(*, delivery: WebhookDelivery, number: int, outcome: network.Outcome) -> str:
    now = timezone.now()
    WebhookAttempt.objects.create(
        delivery=delivery,
        number=number,
        url=outcome.url[:2000],
        status_code=outcome.status_code,
        latency_ms=outcome.latency_ms,
        response_excerpt=outcome.response_excerpt,
        error=outcome.error,
    )
    error = outcome.error or (f"answered {outcome.status_code}" if not outcome.delivered else "")
    WebhookDelivery.objects.filter(id=delivery.id).update(last_status_code=outcome.status_code, last_error=error)
    webhook = Webhook.objects.select_for_update().get(id=delivery.webhook_id)
    if outcome.delivered:
        _delivery_finish(delivery, state=DeliveryState.DELIVERED)
        if webhook.failing_since is not None:
            Webhook.objects.filter(id=webhook.id).update(failing_since=None, updated_at=now)
        return DeliveryState.DELIVERED
    failing_since = webhook.failing_since or now
    if webhook.failing_since is None:
        Webhook.objects.filter(id=webhook.id).update(failing_since=now, updated_at=now)
    if now - failing_since > timedelta(hours=settings.MIRAGE_WEBHOOK_DISABLE_AFTER_HOURS):
        webhook_disable(
            webhook=webhook,
            reason=f"failing since {failing_since:%Y-%m-%d %H:%M:%S} UTC, longer "
            f"than MIRAGE_WEBHOOK_DISABLE_AFTER_HOURS ({settings.MIRAGE_WEBHOOK_DISABLE_AFTER_HOURS} h); "
            f"last error: {error}",
        )
        return DeliveryState.FAILED
    if now - delivery.created_at >= timedelta(hours=settings.MIRAGE_WEBHOOK_RETRY_HOURS):
        _delivery_finish(
            delivery,
            state=DeliveryState.FAILED,
            error=f"gave up after {number} attempts over {settings.MIRAGE_WEBHOOK_RETRY_HOURS} h: {error}",
        )
        return DeliveryState.FAILED
    delay = retry_delay(number)
    WebhookDelivery.objects.filter(id=delivery.id, state=DeliveryState.PENDING).update(
        next_attempt_at=now + timedelta(seconds=delay)
    )
    if delay <= SHORT_WAIT_SECONDS:
        transaction.on_commit(lambda: _send_tasks([delivery.id], countdown=delay))
    return DeliveryState.PENDING


def _delivery_finish(delivery: WebhookDelivery, *, state: str, error: str | None = None) -> None:
    fields = {"state": state, "finished_at": timezone.now(), "next_attempt_at": None}
    if error is not None:
        fields["last_error"] = error
    WebhookDelivery.objects.filter(id=delivery.id).update(**fields)


def webhook_disable(*, webhook: Webhook, reason: str) -> None:
    """Switch off a webhook that kept failing; its pending deliveries end
    as failed (a redelivery after it is switched back on sends them)."""
    now = timezone.now()
    with transaction.atomic():
        Webhook.objects.filter(id=webhook.id).update(
            active=False, disabled_at=now, disabled_reason=reason, updated_at=now
        )
        WebhookDelivery.objects.filter(webhook_id=webhook.id, state=DeliveryState.PENDING).update(
            state=DeliveryState.FAILED, finished_at=now, next_attempt_at=None, last_error="the webhook was disabled"
        )
        history.audit_record(
            project_id=webhook.project_id,
            actor=history.SYSTEM,
            action="webhook.disabled",
            target=f"webhook {webhook.id} {webhook.url}",
            webhook_id=webhook.id,
            reason=reason,
        )
    _forget(webhook.project_id)
    logger.warning("webhook %s disabled: %s", webhook.id, reason)


def delivery_redeliver(*, delivery: WebhookDelivery, actor: str) -> WebhookDelivery:
    """Send a delivery again now, with the same `webhook-id`."""
    with transaction.atomic():
        webhook = Webhook.objects.select_for_update().get(id=delivery.webhook_id)
        if not webhook.active:
            raise WebhookInactive(
                f"webhook {webhook.id} is switched off"
                + (f" (disabled: {webhook.disabled_reason})" if webhook.disabled_at else "")
                + "; switch it on first"
            )
        now = timezone.now()
        WebhookDelivery.objects.filter(id=delivery.id).update(
            state=DeliveryState.PENDING, next_attempt_at=now, finished_at=None
        )
        history.audit_record(
            project_id=webhook.project_id,
            actor=actor,
            action="webhook.redeliver",
            target=f"delivery {delivery.id} ({delivery.message_id})",
            webhook_id=webhook.id,
        )
        transaction.on_commit(lambda: _send_tasks([delivery.id]))
    delivery.refresh_from_db()
    return delivery


def deliveries_send_due(*, limit: int = 1000) -> int:
    """Send a task for every pending delivery that is due (the reconciler)."""
    ids = list(
        WebhookDelivery.objects.filter(state=DeliveryState.PENDING, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )
    _send_tasks(ids)
    return len(ids)
