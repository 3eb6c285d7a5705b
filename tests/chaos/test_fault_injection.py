"""Fault injection with real processes: workers killed, Redis restarted empty,
PostgreSQL restarted, providers failing. Every document must still end in
its true final status, with nothing stuck and nothing duplicated."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Count

from common.models import StatusChange
from documents.invariants import find_violations
from documents.models import Chunk, Document, Project
from jobs.models import Job
from jobs.services import job_cancel
from tests.support import figures
from tests.support.embedders import CALLS_KEY, POISON
from tests.support.processes import Stack, elapsed_since
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

RECORDING = "tests.support.embedders.RecordingEmbedder"
FLAKY = "tests.support.embedders.FlakyEmbedder"
POISONED = "tests.support.embedders.PoisonEmbedder"


def write_documents(directory: Path, *, count: int, sections: int, poison_every: int = 0) -> Path:
    """Markdown files whose every section is distinct text (no cache hits)."""
    directory.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        parts = [f"# Survey {number}\n"]
        for section in range(sections):
            words = " ".join(f"term{number}x{section}y{i}" for i in range(40))
            poison = f" {POISON}" if poison_every and number % poison_every == 0 and section == 1 else ""
            parts.append(f"\n## Part {section}\n\nSurvey {number} part {section}: {words}.{poison}\n")
        (directory / f"survey-{number:02d}.md").write_text("".join(parts))
    return directory


def start_pipeline(stack: Stack) -> None:
    stack.start_worker("ingest", "ingest,maintenance", concurrency=1)
    stack.start_worker("embed", "embed", concurrency=2)
    stack.start_beat()


def chunk_count(**filters) -> int:
    return Chunk.objects.filter(**filters).count()


def all_final(project_name: str, expected: int) -> bool:
    connection.close_if_unusable_or_obsolete()
    statuses = list(Document.objects.filter(project__name=project_name).values_list("status", flat=True))
    return len(statuses) == expected and all(status in Document.FINAL_STATUSES for status in statuses)


def assert_settled(project_name: str) -> None:
    """Nothing stuck, nothing duplicated, and the invariant checker agrees."""
    assert not Chunk.objects.filter(document__project__name=project_name, status__in=Chunk.ACTIVE_STATUSES).exists()
    duplicates = (
        Chunk.objects.filter(document__project__name=project_name)
        .values("document_id", "position")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert not duplicates.exists()
    for document in Document.objects.filter(project__name=project_name).select_related("current_job"):
        assert Chunk.objects.filter(document=document).count() == document.current_job.chunks_created
    assert find_violations(grace_seconds=0) == []


def test_sigkill_of_the_embedding_worker_twice_loses_nothing(stack, tmp_path):
    documents = write_documents(tmp_path / "docs", count=16, sections=20)
    start_pipeline(stack)
    stack.manage("ingest", str(documents), "--project", "killed", "--embedder", RECORDING)
    total = 16 * 20

    kills = []
    for threshold in (0.15, 0.5):
        wait_until(
            lambda threshold=threshold: chunk_count(status="ready") >= threshold * total,
            timeout=180,
            interval=0.2,
            message=f"{threshold:.0%} of chunks ready",
        )
        kills.append(
            {"ready_at_kill": chunk_count(status="ready"), "processing_at_kill": chunk_count(status="processing")}
        )
        stack.kill("embed", signal.SIGKILL)
        stack.start_worker("embed", "embed", concurrency=2)
    restarted = time.monotonic()

    wait_until(lambda: all_final("killed", 16), timeout=240, interval=0.5, message="every document final")
    recovery = elapsed_since(restarted)

    assert set(Document.objects.filter(project__name="killed").values_list("status", flat=True)) == {"ready"}
    assert chunk_count(document__project__name="killed", status="ready") == chunk_count(
        document__project__name="killed"
    )
    assert_settled("killed")
    assert set(Job.objects.filter(project_id__isnull=False).values_list("status", flat=True)) == {"completed"}
    # The history of a repaired document names the reconciler and says why.
    project = Project.objects.get(name="killed")
    repairs = StatusChange.objects.filter(
        entity="document", project_id=project.id, actor="reconciler:redispatch_stuck_chunks"
    )
    assert repairs.exists()
    repair = repairs.order_by("id").first()
    assert re.fullmatch(
        r"re-sent \d+ chunks? (stranded by a dead worker \(lease expired\)|that no worker took "
        r"within a lease of being sent \(message lost or queue backlog\))",
        repair.reason,
    ), repair.reason
    timeline = list(StatusChange.objects.filter(entity="document", entity_id=repair.entity_id).order_by("id"))
    assert [row.to_status for row in timeline][:2] == ["pending", "indexing"]
    assert timeline[-1].to_status == "ready"
    figures.record(
        "sigkill embed worker x2",
        documents=16,
        chunks=chunk_count(),
        kills=kills,
        seconds_from_last_restart_to_all_final=recovery,
        repair_reason=repair.reason,
    )


def test_redis_restarted_with_its_data_lost_loses_nothing(stack, tmp_path):
    documents = write_documents(tmp_path / "docs", count=20, sections=25)
    start_pipeline(stack)
    stack.manage("ingest", str(documents), "--project", "amnesia", "--embedder", RECORDING)
    total = 20 * 25

    wait_until(
        lambda: chunk_count(status="ready") >= 0.2 * total, timeout=180, interval=0.2, message="20% of chunks ready"
    )
    in_flight = {
        "ready": chunk_count(status="ready"),
        "pending": chunk_count(status="pending"),
        "processing": chunk_count(status="processing"),
        "documents_pending": Document.objects.filter(status="pending").count(),
    }
    stack.kill("redis", signal.SIGKILL)
    stack.start_redis()  # no persistence: every queued message, chord counter and marker is gone
    restarted = time.monotonic()

    wait_until(lambda: all_final("amnesia", 20), timeout=240, interval=0.5, message="every document final")
    recovery = elapsed_since(restarted)

    assert set(Document.objects.filter(project__name="amnesia").values_list("status", flat=True)) == {"ready"}
    assert_settled("amnesia")
    figures.record(
        "redis restarted empty",
        documents=20,
        chunks=chunk_count(),
        in_flight_at_restart=in_flight,
        seconds_from_restart_to_all_final=recovery,
    )


@pytest.mark.restarts_database
@pytest.mark.skipif(bool(os.environ.get("MIRAGE_DATABASE_URL")), reason="restarts only the project-local PostgreSQL")
def test_postgres_restart_while_documents_are_in_flight_loses_nothing(stack, tmp_path):
    from mirage import devservices

    documents = write_documents(tmp_path / "docs", count=20, sections=25)
    start_pipeline(stack)
    stack.manage("ingest", str(documents), "--project", "outage", "--embedder", RECORDING)
    total = 20 * 25

    wait_until(
        lambda: chunk_count(status="ready") >= 0.2 * total, timeout=180, interval=0.2, message="20% of chunks ready"
    )
    ready_before = chunk_count(status="ready")
    connection.close()
    devservices.database_restart()
    restarted = time.monotonic()

    wait_until(lambda: all_final("outage", 20), timeout=240, interval=0.5, message="every document final")
    recovery = elapsed_since(restarted)

    assert set(Document.objects.filter(project__name="outage").values_list("status", flat=True)) == {"ready"}
    assert_settled("outage")
    figures.record(
        "postgres restarted",
        documents=20,
        chunks=chunk_count(),
        ready_at_restart=ready_before,
        seconds_from_restart_to_all_final=recovery,
    )


def test_provider_failing_30_percent_of_calls_transiently_ends_all_ready(stack, tmp_path):
    stack.env.update(MIRAGE_TEST_FAILURE_RATE="0.3", MIRAGE_CHUNK_MAX_ATTEMPTS="15")
    documents = write_documents(tmp_path / "docs", count=10, sections=20)
    start_pipeline(stack)
    started = time.monotonic()
    stack.manage("ingest", str(documents), "--project", "flaky", "--embedder", FLAKY)

    wait_until(lambda: all_final("flaky", 10), timeout=240, interval=0.5, message="every document final")

    assert set(Document.objects.filter(project__name="flaky").values_list("status", flat=True)) == {"ready"}
    assert set(Job.objects.values_list("status", flat=True)) == {"completed"}
    assert_settled("flaky")
    retried = Chunk.objects.filter(attempts__gt=1).count()
    assert retried > 0  # the failures really happened
    figures.record(
        "30% transient provider failures",
        documents=10,
        chunks=chunk_count(),
        chunks_retried=retried,
        max_attempts=max(Chunk.objects.values_list("attempts", flat=True)),
        seconds_to_all_final=elapsed_since(started),
    )


def test_permanent_failures_give_partial_documents_and_completed_jobs_never_ready(stack, tmp_path):
    documents = write_documents(tmp_path / "docs", count=9, sections=10, poison_every=3)
    start_pipeline(stack)
    stack.manage("ingest", str(documents), "--project", "poisoned", "--embedder", POISONED)
    poisoned_names = {f"survey-{n:02d}.md" for n in range(9) if n % 3 == 0}

    seen: dict[str, set[str]] = {}

    def watch() -> bool:
        for filename, status in Document.objects.filter(project__name="poisoned").values_list("filename", "status"):
            seen.setdefault(filename, set()).add(status)
        return all_final("poisoned", 9)

    wait_until(watch, timeout=180, interval=0.05, message="every document final")

    for document in Document.objects.filter(project__name="poisoned").select_related("current_job"):
        if document.filename in poisoned_names:
            assert document.status == "partial"
            assert document.current_job.status == "completed"
            assert document.current_job.chunks_failed > 0
            assert "ready" not in seen[document.filename]
        else:
            assert document.status == "ready"
    assert_settled("poisoned")
    figures.record(
        "permanent failures",
        documents=9,
        poisoned=len(poisoned_names),
        statuses_seen={name: sorted(statuses) for name, statuses in seen.items() if name in poisoned_names},
    )


def test_cancel_mid_run_stops_embedding_calls_within_5_seconds(stack, tmp_path):
    stack.env.update(MIRAGE_TEST_EMBED_DELAY="0.2")
    documents = write_documents(tmp_path / "docs", count=1, sections=120)
    start_pipeline(stack)
    stack.manage("ingest", str(documents), "--project", "cancelled", "--embedder", RECORDING)
    document = Document.objects.get(project__name="cancelled")

    wait_until(
        lambda: chunk_count(document=document, status="ready") >= 5,
        timeout=120,
        interval=0.1,
        message="embedding under way",
    )
    cancelled_at = time.time()
    job_cancel(job_id=document.current_job_id)

    # Watch the provider for a while after the 5-second window.
    deadline = cancelled_at + 12
    wait_until(lambda: time.time() > deadline, timeout=20, interval=0.5)
    calls = [float(raw.decode().partition("|")[0]) for raw in stack.redis().lrange(CALLS_KEY, 0, -1)]
    late = [stamp - cancelled_at for stamp in calls if stamp > cancelled_at + 5]
    last_call = max(calls) - cancelled_at

    document.refresh_from_db()
    job = Job.objects.get(id=document.current_job_id)
    assert document.status == "cancelled"
    assert job.status == "cancelled" and job.cancelled_at is not None
    assert late == []
    assert chunk_count(document=document, status="ready") < 120
    figures.record(
        "cancel mid-run",
        chunks=120,
        embedded_before_cancel_settled=chunk_count(document=document, status="ready"),
        last_provider_call_after_cancel_seconds=round(last_call, 2),
        calls_after_5_seconds=len(late),
    )
