"""python manage.py jobs [--status S] [--limit N] | --cancel ID"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from common.tables import format_table, shorten
from jobs import services
from jobs.models import Job

MESSAGE_WIDTH = 40
HEADERS = ["ID", "KIND", "STATUS", "PROGRESS", "MESSAGE", "FILES", "CHUNKS", "FAILED", "CREATED"]


def job_row(job: Job) -> list[str]:
    return [
        str(job.id),
        job.kind,
        job.status,
        f"{job.progress_percentage}%",
        shorten(job.progress_message, MESSAGE_WIDTH),
        f"{job.files_indexed}/{job.files_scanned}" if job.files_scanned else "-",
        str(job.chunks_created),
        str(job.chunks_failed),
        job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
    ]


class Command(BaseCommand):
    help = "List jobs, newest first, or cancel one."

    def add_arguments(self, parser):
        parser.add_argument("--status", choices=Job.Status.values, help="only jobs in this status")
        parser.add_argument("--limit", type=int, default=50, help="at most this many jobs (default 50)")
        parser.add_argument("--cancel", type=int, metavar="ID", help="cancel this pending or running job")

    def handle(self, *args, **options):
        if options["cancel"] is not None:
            self._cancel(options["cancel"])
            return
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        queryset = Job.objects.order_by("-created_at", "-id")
        if options["status"]:
            queryset = queryset.filter(status=options["status"])
        jobs = list(queryset[: options["limit"]])
        if not jobs:
            self.stdout.write("no jobs")
            return
        for line in format_table(HEADERS, [job_row(job) for job in jobs]):
            self.stdout.write(line)

    def _cancel(self, job_id: int) -> None:
        try:
            job = services.job_cancel(job_id=job_id)
        except Job.DoesNotExist:
            raise CommandError(f"no job with id {job_id}") from None
        except services.JobAlreadyFinished as exc:
            # CommandError: the reason on stderr and exit status 1.
            raise CommandError(str(exc)) from None
        self.stdout.write(self.style.SUCCESS(f"cancelled job {job.id} ({job.kind})"))
