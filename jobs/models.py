"""The record of one piece of background work.

`jobs` knows nothing of documents: a job points at its subject with plain
ids (`project_id`, `subject_id`), and the app that owns a kind registers it,
with how to run and cancel it (see `jobs.registry`).
"""

from django.db import models
from django.db.models import Q


class Job(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Priority(models.TextChoices):
        HIGH = "high", "High"
        NORMAL = "normal", "Normal"
        LOW = "low", "Low"

    ACTIVE_STATUSES = (Status.PENDING, Status.RUNNING)
    FINAL_STATUSES = (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    # Registered by the app that owns the work (see jobs.registry); checked
    # when a job is created.
    kind = models.CharField(max_length=32)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    project_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    # High-priority work is admitted, and its chunks embedded, before waiting normal work.
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.NORMAL)
    subject_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    # Jobs of an import are children of the import job.
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children")

    progress_percentage = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=255, blank=True, default="")
    files_scanned = models.PositiveIntegerField(default=0)
    files_indexed = models.PositiveIntegerField(default=0)
    chunks_created = models.PositiveIntegerField(default=0)
    chunks_failed = models.PositiveIntegerField(default=0)

    error_message = models.TextField(blank=True, default="")
    error_type = models.CharField(max_length=64, blank=True, default="")
    error_traceback = models.TextField(blank=True, default="")

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Admitted (a slot was free; `running`).
    started_at = models.DateTimeField(null=True, blank=True)
    # Its work really began (a worker took it): the end of its waiting.
    work_started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    metadata = models.JSONField(default=dict, blank=True)
    celery_task_id = models.CharField(max_length=64, blank=True, default="")
    celery_chord_id = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["pending", "running", "completed", "failed", "cancelled"]),
                name="job_status_valid",
            ),
            models.CheckConstraint(condition=Q(priority__in=["high", "normal", "low"]), name="job_priority_valid"),
            models.CheckConstraint(
                condition=Q(progress_percentage__gte=0) & Q(progress_percentage__lte=100),
                name="job_progress_percentage_range",
            ),
            models.CheckConstraint(
                condition=~Q(status="completed") | Q(progress_percentage=100),
                name="job_completed_means_100_percent",
            ),
        ]
        indexes = [
            # What admission and the timeout reconciler scan: active jobs only.
            models.Index(
                fields=["status", "created_at"],
                name="job_active_idx",
                condition=Q(status__in=["pending", "running"]),
            ),
            # What retention purges: finished jobs by age.
            models.Index(
                fields=["completed_at"],
                name="job_finished_idx",
                condition=Q(status__in=["completed", "failed", "cancelled"]),
            ),
        ]

    def __str__(self) -> str:
        return f"Job {self.pk} {self.kind} ({self.status})"

    @property
    def is_final(self) -> bool:
        return self.status in self.FINAL_STATUSES
