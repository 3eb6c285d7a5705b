"""Job events on the project's live stream."""

from __future__ import annotations

from common import events


def job_payload(job) -> dict:
    from django.utils import timezone

    from jobs import timing

    times = timing.job_timing(job, now=timezone.now())
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "project_id": job.project_id,
        "subject_id": job.subject_id,
        "progress_percentage": job.progress_percentage,
        "progress_message": job.progress_message,
        "chunks_created": job.chunks_created,
        "chunks_failed": job.chunks_failed,
        "error_type": job.error_type,
        "error_message": job.error_message,
        "queued_at": job.created_at,
        "waiting_seconds": times["waiting_seconds"],
        "working_seconds": times["working_seconds"],
        "queue_position": times["queue_position"],
    }


# Later statuses rank above earlier ones, and within a status, progress.
_STATUS_RANK = {"pending": 0, "running": 1, "completed": 2, "failed": 2, "cancelled": 2}


def publish_job(job) -> None:
    """`job.progress`: never older than what a client already received."""
    rank = _STATUS_RANK.get(job.status, 0) * 1000 + job.progress_percentage
    finished = _STATUS_RANK.get(job.status, 0) == _STATUS_RANK["completed"]
    events.publish_monotonic(
        project_id=job.project_id,
        event="job.progress",
        data=job_payload(job),
        key=f"job:{job.id}",
        rank=rank,
        ttl=events.FINISHED_RANK_TTL_SECONDS if finished else events.RANK_TTL_SECONDS,
    )


def publish_job_id(job_id: int) -> None:
    from jobs.models import Job

    job = Job.objects.filter(id=job_id).first()
    if job is not None:
        publish_job(job)
