"""The durable record of what happened: every status change of a document or
a job, and a project's audit log. Rows point at what they record by plain
ids, so they outlive it (until MIRAGE_HISTORY_RETENTION_DAYS)."""

from django.db import models
from django.db.models import Q

HISTORY_ENTITIES = ["document", "job"]


class StatusChange(models.Model):
    """One status change of a document or a job (or, with the same status on
    both sides, a repair done to its chunks)."""

    class Entity(models.TextChoices):
        DOCUMENT = "document", "Document"
        JOB = "job", "Job"

    entity = models.CharField(max_length=16, choices=Entity.choices)
    entity_id = models.BigIntegerField()
    project_id = models.BigIntegerField(null=True, blank=True)
    # Empty for the row that records the entity's creation.
    from_status = models.CharField(max_length=16, blank=True, default="")
    to_status = models.CharField(max_length=16)
    # `user:<id>`, `operator:<id>`, `worker`, `reconciler:<name>` or `system`.
    actor = models.CharField(max_length=64)
    reason = models.TextField(blank=True, default="")
    job_id = models.BigIntegerField(null=True, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["entity", "entity_id", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(entity__in=HISTORY_ENTITIES), name="status_change_entity_valid"),
        ]
        indexes = [
            models.Index(fields=["entity", "entity_id", "id"], name="status_change_entity_idx"),
            models.Index(fields=["at"], name="status_change_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.entity} {self.entity_id}: {self.from_status or '-'} -> {self.to_status}"


class AuditEntry(models.Model):
    """Something a person or the platform did to a project's data: uploads,
    deletions, reindex, retry, cancel, settings changes."""

    project_id = models.BigIntegerField(db_index=False)
    actor = models.CharField(max_length=64)
    action = models.CharField(max_length=64)
    # What it was done to, in words that stay readable after it is gone
    # ("document 12 report.pdf").
    target = models.CharField(max_length=500, blank=True, default="")
    details = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "id"]
        verbose_name_plural = "audit entries"
        indexes = [
            models.Index(fields=["project_id", "id"], name="audit_project_idx"),
            models.Index(fields=["at"], name="audit_at_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.target}"


class Pause(models.Model):
    """An operator's pause of one project's work (`project_id`) or of the
    whole deployment (`project_id` empty). A pause is in force while
    `resumed_at` is empty; the rows stay afterwards as the record of who
    paused what, why, and for how long.

    Paused work keeps its statuses (a job stays `pending` or `running`, a
    document `pending` or `indexing`): nothing new starts for it, and the
    API, events, admin and `docstatus` say `paused` with the reason."""

    project_id = models.BigIntegerField(null=True, blank=True)
    reason = models.TextField()
    paused_by = models.CharField(max_length=64)
    paused_at = models.DateTimeField(auto_now_add=True)
    resumed_by = models.CharField(max_length=64, blank=True, default="")
    resumed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-paused_at", "-id"]
        constraints = [
            # At most one pause in force per project, and one for the deployment.
            models.UniqueConstraint(
                fields=["project_id"],
                condition=Q(resumed_at__isnull=True),
                nulls_distinct=False,
                name="pause_one_in_force_per_scope",
            ),
        ]
        indexes = [
            models.Index(fields=["project_id"], name="pause_in_force_idx", condition=Q(resumed_at__isnull=True)),
        ]

    def __str__(self) -> str:
        scope = f"project {self.project_id}" if self.project_id is not None else "deployment"
        state = "in force" if self.resumed_at is None else f"resumed {self.resumed_at:%Y-%m-%d %H:%M:%S}"
        return f"pause of {scope} ({state}): {self.reason}"
