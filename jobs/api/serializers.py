from rest_framework import serializers

from jobs.models import Job


class JobSerializer(serializers.ModelSerializer):
    class Meta:
        model = Job
        fields = [
            "id", "kind", "status", "project_id", "subject_id", "parent_id",
            "progress_percentage", "progress_message",
            "files_scanned", "files_indexed", "chunks_created", "chunks_failed",
            "error_message", "error_type", "error_traceback",
            "created_at", "updated_at", "started_at", "completed_at", "cancelled_at",
            "metadata", "celery_task_id", "celery_chord_id",
        ]
        read_only_fields = fields
