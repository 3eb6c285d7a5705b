"""python manage.py docstatus [--project NAME]"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from common import pauses
from common.tables import format_table, shorten
from documents import selectors
from documents.models import Document, Project

HEADERS = ["ID", "PROJECT", "FILENAME", "TYPE", "STATUS", "PROGRESS", "FAILED", "WAITED", "WORKED", "ETA", "JOB"]
NAME_WIDTH = 40


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 120 else f"{minutes // 60}h{minutes % 60:02d}m"


def document_row(document: Document, now, held: pauses.PausesInForce | None = None) -> list[str]:
    """One line of an annotated document (selectors.documents_with_progress).
    Active work held by a pause shows `<status> (paused)`."""
    job = document.current_job
    times = selectors.document_timing(document, now=now)
    job_text = f"{job.id} {job.status}" if job is not None else "-"
    if times["queue_position"] is not None:
        job_text += f" ({times['queue_position']} ahead)"
    paused = (
        held is not None
        and document.status in Document.ACTIVE_STATUSES
        and held.for_project(document.project_id) is not None
    )
    return [
        str(document.id),
        shorten(document.project.name, NAME_WIDTH),
        shorten(document.filename, NAME_WIDTH),
        document.file_type,
        f"{document.status} (paused)" if paused else document.status,
        f"{document.chunks_processed}/{document.chunks_total} ({selectors.progress_percent(document)}%)",
        str(document.chunks_error),
        _duration(times["waiting_seconds"]),
        _duration(times["working_seconds"]),
        _duration(times["eta_seconds"]),
        job_text,
    ]


class Command(BaseCommand):
    help = "One line per document: status, chunk progress, failed chunks and current job."

    def add_arguments(self, parser):
        parser.add_argument("--project", help="only the documents of this project (by name)")

    def handle(self, *args, **options):
        queryset = Document.objects.order_by("project__name", "id")
        if options["project"]:
            queryset = queryset.filter(project__name=options["project"])
        documents = list(selectors.documents_with_progress(queryset))
        if not documents:
            if options["project"] and not Project.objects.filter(name=options["project"]).exists():
                raise CommandError(f"no project named {options['project']!r}")
            self.stdout.write("no documents")
            return
        now = timezone.now()
        held = pauses.pauses_in_force()
        for line in format_table(HEADERS, [document_row(document, now, held) for document in documents]):
            self.stdout.write(line)
        for pause in ([held.deployment] if held.deployment else []) + list(held.projects.values()):
            self.stdout.write(f"paused: {pauses.pause_words(pause)}")
