from rest_framework import serializers

from common.pauses import pause_state
from jobs.models import Job


class JobSerializer(serializers.ModelSerializer):
    paused = serializers.SerializerMethodField(help_text="The job's project, or the deployment, is paused.")
    paused_reason = serializers.SerializerMethodField(help_text="Who paused it, when and why; empty when not paused.")
    class Meta:
        model = Job
        fields = [
            "id", "kind", "status", "priority", "paused", "paused_reason", "project_id", "subject_id", "parent_id",
            "progress_percentage", "progress_message",
            "files_scanned", "files_indexed", "chunks_created", "chunks_failed",
            "error_message", "error_type", "error_traceback",
            "created_at", "updated_at", "started_at", "completed_at", "cancelled_at",
            "metadata", "celery_task_id", "celery_chord_id",
        ]
        read_only_fields = fields

    def get_paused(self, job) -> bool:
        return pause_state(self.context, project_id=job.project_id, active=not job.is_final)[0]

    def get_paused_reason(self, job) -> str:
        return pause_state(self.context, project_id=job.project_id, active=not job.is_final)[1]
