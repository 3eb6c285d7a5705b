"""python manage.py demo [PATH...]: the pipeline end to end on real documents.

Starts a Celery worker (with beat, so the reconcilers run too), ingests the
repository's own docs/ and README.md (plus any PATH given) with the local
model, shows progress, prints statuses, chunk counts and one semantic
search, and stops the worker it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from documents import search, selectors
from documents.models import Document, Project
from mirage import launch
from mirage.celery import app as celery_app

DEMO_PROJECT = "demo"
DEMO_QUERY = "How does Mirage recover work after a worker is killed?"


class Command(BaseCommand):
    help = "Run the ingestion pipeline end to end on real documents and print what happened."

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="*", help="extra files or directories to ingest")
        parser.add_argument("--embedder", default="local")
        parser.add_argument("--query", default=DEMO_QUERY)

    def handle(self, *args, **options):
        base = Path(settings.BASE_DIR)
        paths = [str(base / "docs"), str(base / "README.md"), *options["paths"]]
        worker = self._start_worker(base)
        try:
            self._wait_for_worker()
            self.stdout.write(
                self.style.MIGRATE_HEADING(f"Ingesting {len(paths)} path(s) into project {DEMO_PROJECT!r}")
            )
            call_command(
                "ingest",
                *paths,
                project=DEMO_PROJECT,
                embedder=options["embedder"],
                wait=True,
                timeout=1800,
                stdout=self.stdout,
            )
            self._report(options["query"])
        finally:
            self._stop_worker(worker)

    def _start_worker(self, base: Path) -> subprocess.Popen:
        log = base / ".mirage" / "demo-worker.log"
        log.parent.mkdir(exist_ok=True)
        self.stdout.write(f"starting a Celery worker with beat (log: {log})")
        # Threads: the embed tasks share one micro-batcher and one model.
        command = launch.celery_worker(
            queues="ingest,embed,maintenance",
            node=f"demo-{os.getpid()}@%h",
            pool="threads",
            concurrency=8,
            options=("--beat", "--schedule", str(base / ".mirage" / "demo-beat-schedule")),
        )
        with open(log, "ab") as handle:
            return subprocess.Popen(command, cwd=base, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_for_worker(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if celery_app.control.ping(timeout=1.0):
                return
        raise CommandError("the worker did not start; see .mirage/demo-worker.log")

    def _stop_worker(self, worker: subprocess.Popen) -> None:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
        self.stdout.write("worker stopped")

    def _report(self, query: str) -> None:
        project = Project.objects.get(name=DEMO_PROJECT)
        documents = list(
            selectors.documents_with_progress(Document.objects.filter(project=project)).order_by("filename")
        )
        by_status: dict[str, int] = {}
        for document in documents:
            by_status[document.status] = by_status.get(document.status, 0) + 1
        chunks = sum(d.chunks_total for d in documents)
        self.stdout.write(self.style.MIGRATE_HEADING("\nWhat happened"))
        self.stdout.write(
            f"{len(documents)} documents ("
            + ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))
            + f"), {chunks} chunks, model {project.embedding_model}"
        )
        self.stdout.write(self.style.MIGRATE_HEADING(f"\nSemantic search: {query!r}"))
        for rank, hit in enumerate(search.search(project=project, query=query, k=5), start=1):
            where = " > ".join(hit.structure.get("heading_path") or []) or hit.structure.get("title") or ""
            snippet = " ".join(hit.content.split())[:160]
            self.stdout.write(f"{rank}. {hit.score:.3f}  {hit.filename}  [{where}]")
            self.stdout.write(f"     {snippet}")
