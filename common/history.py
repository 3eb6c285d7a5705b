"""Writing and purging the durable history (see common.models).

Callers are the transition functions (status changes) and the services that
act on a project's data (audit). Rows are written in the caller's
transaction, so a change and its record commit or roll back together.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from common.models import AuditEntry, StatusChange

logger = logging.getLogger(__name__)

SYSTEM = "system"
WORKER = "worker"


def user_actor(user) -> str:
    """`user:<id>` for a REST client, `system` when there is no user."""
    return f"user:{user.pk}" if getattr(user, "pk", None) else SYSTEM


def operator_actor(user) -> str:
    """`operator:<id>` for an admin action."""
    return f"operator:{user.pk}" if getattr(user, "pk", None) else SYSTEM


def reconciler_actor(name: str) -> str:
    return f"reconciler:{name}"


def status_change_record(
    *,
    entity: str,
    entity_id: int,
    project_id: int | None,
    from_status: str,
    to_status: str,
    actor: str,
    reason: str = "",
    job_id: int | None = None,
) -> None:
    StatusChange.objects.create(
        entity=entity,
        entity_id=entity_id,
        project_id=project_id,
        from_status=from_status or "",
        to_status=to_status,
        actor=actor[:64],
        reason=reason,
        job_id=job_id,
    )


def audit_record(*, project_id: int, actor: str, action: str, target: str = "", **details) -> None:
    AuditEntry.objects.create(
        project_id=project_id, actor=actor[:64], action=action, target=target[:500], details=details
    )


def history_purge(*, now=None) -> int:
    """Delete history and audit rows older than MIRAGE_HISTORY_RETENTION_DAYS."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.MIRAGE_HISTORY_RETENTION_DAYS)
    changes, _ = StatusChange.objects.filter(at__lt=cutoff).delete()
    audits, _ = AuditEntry.objects.filter(at__lt=cutoff).delete()
    if changes or audits:
        logger.info(
            "purged %s status changes and %s audit entries older than %s days",
            changes,
            audits,
            settings.MIRAGE_HISTORY_RETENTION_DAYS,
        )
    return changes + audits
