from datetime import tzinfo

from rest_framework import serializers

from common.api import datetime_text, response_now
from common.pauses import pause_state
from jobs import timing
from jobs.models import Job


class JobSerializer(serializers.ModelSerializer):
    queued_at = serializers.SerializerMethodField(help_text="When the job was submitted.")
    waiting_seconds = serializers.SerializerMethodField(
        help_text="From submission to the first work on it (or until now while nobody has taken it)."
    )
    working_seconds = serializers.SerializerMethodField(
        help_text="From the first work to its end (or until now); null before any work."
    )
    queue_position = serializers.SerializerMethodField(
        help_text="While pending: how many waiting jobs will be admitted before it; null otherwise."
    )

    paused = serializers.SerializerMethodField(help_text="The job's project, or the deployment, is paused.")
    paused_reason = serializers.SerializerMethodField(help_text="Who paused it, when and why; empty when not paused.")

    class Meta:
        model = Job
        fields = [
            "id",
            "kind",
            "status",
            "priority",
            "paused",
            "paused_reason",
            "project_id",
            "subject_id",
            "parent_id",
            "progress_percentage",
            "progress_message",
            "files_scanned",
            "files_indexed",
            "chunks_created",
            "chunks_failed",
            "error_message",
            "error_type",
            "error_traceback",
            "created_at",
            "updated_at",
            "started_at",
            "work_started_at",
            "completed_at",
            "cancelled_at",
            "queued_at",
            "waiting_seconds",
            "working_seconds",
            "queue_position",
            "metadata",
            "celery_task_id",
            "celery_chord_id",
        ]
        read_only_fields = fields

    def _timing(self, job) -> dict:
        cached = getattr(job, "_timing", None)
        if cached is None:
            cached = job._timing = timing.job_timing(job, now=response_now(self.context))
        return cached

    def get_queued_at(self, job) -> str:
        return serializers.DateTimeField().to_representation(self._timing(job)["queued_at"])

    def get_waiting_seconds(self, job) -> float | None:
        return self._timing(job)["waiting_seconds"]

    def get_working_seconds(self, job) -> float | None:
        return self._timing(job)["working_seconds"]

    def get_queue_position(self, job) -> int | None:
        return self._timing(job)["queue_position"]

    def get_paused(self, job) -> bool:
        return pause_state(self.context, project_id=job.project_id, active=not job.is_final)[0]

    def get_paused_reason(self, job) -> str:
        return pause_state(self.context, project_id=job.project_id, active=not job.is_final)[1]


def job_row(job: Job, *, context: dict, zone: tzinfo) -> dict:
    """What JobSerializer(job, context=context).data holds (same keys in the
    same order, same values), as a plain dict: for lists that answer a job
    per row, where DRF's per-field work was most of the CPU. `zone` is the
    current time zone. tests/api/test_list_rows.py holds the two equal."""
    paused, paused_reason = pause_state(context, project_id=job.project_id, active=not job.is_final)
    times = timing.job_timing(job, now=response_now(context))
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "priority": job.priority,
        "paused": paused,
        "paused_reason": paused_reason,
        "project_id": job.project_id,
        "subject_id": job.subject_id,
        "parent_id": job.parent_id,
        "progress_percentage": job.progress_percentage,
        "progress_message": job.progress_message,
        "files_scanned": job.files_scanned,
        "files_indexed": job.files_indexed,
        "chunks_created": job.chunks_created,
        "chunks_failed": job.chunks_failed,
        "error_message": job.error_message,
        "error_type": job.error_type,
        "error_traceback": job.error_traceback,
        "created_at": datetime_text(job.created_at, zone),
        "updated_at": datetime_text(job.updated_at, zone),
        "started_at": datetime_text(job.started_at, zone),
        "work_started_at": datetime_text(job.work_started_at, zone),
        "completed_at": datetime_text(job.completed_at, zone),
        "cancelled_at": datetime_text(job.cancelled_at, zone),
        "queued_at": datetime_text(times["queued_at"], zone),
        "waiting_seconds": times["waiting_seconds"],
        "working_seconds": times["working_seconds"],
        "queue_position": times["queue_position"],
        "metadata": job.metadata,
        "celery_task_id": job.celery_task_id,
        "celery_chord_id": job.celery_chord_id,
    }
