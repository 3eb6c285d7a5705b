"""python manage.py ingest PATH... --project NAME [--owner USER] [--wait [--strict]]

Exit codes, for scripts:
  0  every file was accepted (and, with --wait, every document ended
     `ready`, or `partial` without --strict)
  1  the command could not run (unknown path, project or user, bad option)
  3  a file was refused (unsupported type, empty, too large)
  4  with --wait: a document ended `error` or `cancelled` (or `partial`
     with --strict)
  5  with --wait: documents were still indexing at --timeout
When several apply, the highest code is returned."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from documents import selectors, services
from documents.embeddings import EmbeddingError
from documents.imports import SUPPORTED_SUFFIXES
from documents.models import Document, Project
from documents.parsers import ParseError
from jobs.models import Job

BAR_WIDTH = 28
EXIT_REFUSED = 3
EXIT_FAILED = 4
EXIT_TIMEOUT = 5


def _files(paths: list[str]):
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and child.suffix.lower() in SUPPORTED_SUFFIXES:
                    yield child
        elif path.is_file():
            yield path
        else:
            raise CommandError(f"{raw}: no such file or directory")


def progress_line(document: Document, name_width: int) -> str:
    percent = selectors.progress_percent(document)
    filled = int(BAR_WIDTH * percent / 100)
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    counts = f"{document.chunks_processed}/{document.chunks_total} chunks"
    return f"{document.filename[:name_width]:<{name_width}} [{bar}] {percent:3d}% {counts:>16} {document.status}"


class Command(BaseCommand):
    help = "Create documents (and their index jobs) from files or directories."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+")
        parser.add_argument("--project", required=True, help="project name (created if missing)")
        parser.add_argument("--embedder", help="embedder for a new project (default: MIRAGE_EMBEDDER)")
        parser.add_argument("--owner", help="username that owns a new project and can see it through the API")
        parser.add_argument("--wait", action="store_true", help="show progress until every document is final")
        parser.add_argument(
            "--strict",
            action="store_true",
            help="with --wait, a `partial` document is a failure (exit 4), not a warning",
        )
        parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait at most")
        parser.add_argument(
            "--priority",
            choices=Job.Priority.values,
            default=Job.Priority.NORMAL,
            help="high work is indexed before waiting normal work, low after it (default normal)",
        )

    def handle(self, *args, **options):
        owner = None
        if options["owner"]:
            owner = get_user_model().objects.filter(username=options["owner"]).first()
            if owner is None:
                raise CommandError(f"no user named {options['owner']!r}")
        project = Project.objects.filter(name=options["project"], owner=owner).first()
        if project is None:
            try:
                project = services.project_create(name=options["project"], embedder=options["embedder"], owner=owner)
            except (ValueError, EmbeddingError) as exc:
                raise CommandError(f"cannot create project {options['project']!r}: {exc}") from None
            self.stdout.write(f"created project {project.name!r} (model {project.embedding_model})")
        self.stdout.write(_who_can_see(project))
        document_ids: list[int] = []
        refused = 0
        for path in _files(options["paths"]):
            try:
                with open(path, "rb") as handle:
                    submission = services.document_submit(
                        project=project, source=handle, filename=path.name, priority=options["priority"]
                    )
            except (services.UploadRejected, ParseError) as exc:
                refused += 1
                self.stdout.write(self.style.WARNING(f"refused {path}: {exc}"))
                continue
            document = submission.document
            document_ids.append(document.id)
            if submission.created:
                self.stdout.write(f"queued {path} (document {document.id}, job {submission.job.id})")
            else:
                self.stdout.write(f"already in project: {path} (document {document.id}, {document.status})")
        exit_code = 0
        if options["wait"] and document_ids:
            exit_code = self._wait(document_ids, options["timeout"], strict=options["strict"])
        if refused:
            self.stdout.write(self.style.WARNING(f"{refused} file(s) refused"))
            exit_code = max(exit_code, EXIT_REFUSED)
        if exit_code:
            reasons = {
                EXIT_REFUSED: "files were refused",
                EXIT_FAILED: "documents did not end ready",
                EXIT_TIMEOUT: "documents were still indexing at the timeout",
            }
            raise CommandError(reasons[exit_code], returncode=exit_code)

    def _wait(self, document_ids: list[int], timeout: float, *, strict: bool) -> int:
        interactive = self.stdout.isatty() if hasattr(self.stdout, "isatty") else sys.stdout.isatty()
        deadline = time.monotonic() + timeout
        last_printed: dict[int, tuple] = {}
        drawn = 0
        while True:
            documents = list(
                selectors.documents_with_progress(Document.objects.filter(id__in=document_ids)).order_by("id")
            )
            width = max((len(d.filename) for d in documents), default=10)
            width = min(width, 40)
            if interactive:
                if drawn:
                    self.stdout.write(f"\x1b[{drawn}F", ending="")
                for document in documents:
                    self.stdout.write("\x1b[2K" + progress_line(document, width))
                drawn = len(documents)
            else:
                for document in documents:
                    state = (document.status, selectors.progress_percent(document) // 10)
                    if last_printed.get(document.id) != state:
                        last_printed[document.id] = state
                        self.stdout.write(progress_line(document, width))
            self.stdout.flush()
            if all(document.status in Document.FINAL_STATUSES for document in documents):
                break
            if time.monotonic() > deadline:
                self.stdout.write(self.style.ERROR(f"documents still indexing after {timeout:.0f} s"))
                return EXIT_TIMEOUT
            time.sleep(0.5)
        self._summary(documents)
        failing = {Document.Status.ERROR, Document.Status.CANCELLED} | ({Document.Status.PARTIAL} if strict else set())
        return EXIT_FAILED if any(document.status in failing for document in documents) else 0

    def _summary(self, documents: list[Document]) -> None:
        self.stdout.write("")
        for document in documents:
            counts = selectors.chunk_counts_of(document)
            detail = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
            job = document.current_job
            job_text = f"job {job.id} {job.status}" if isinstance(job, Job) else "no job"
            line = f"{document.status:<9} {document.filename}: {detail or 'no chunks'}; {job_text}"
            if document.error_message:
                line += f" - {document.error_message}"
            style = self.style.SUCCESS if document.status == Document.Status.READY else self.style.WARNING
            self.stdout.write(style(line))


def _who_can_see(project: Project) -> str:
    members = sorted(project.members.values_list("username", flat=True))
    if members:
        return f"project {project.name!r} (id {project.id}) is visible through the API to: {', '.join(members)}"
    return (
        f"project {project.name!r} (id {project.id}) has no members: only staff see it through the API "
        "(use --owner USER to give it one)"
    )
