"""Fair share and priority with real processes and the hash embedder.

Project A queues a 5,000-chunk document and 200 small ones; project B then
uploads one small document, which must be final while A is still indexing.
A `high` upload into A, behind the thousands of A's `normal` chunks still
waiting, must be final before them. Only orderings are asserted; the times
are figures (bench row 8 and 9 measure them)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.db import connection

from documents.models import Chunk, Document
from tests.chaos.test_fault_injection import start_pipeline
from tests.support import figures
from tests.support.waiting import wait_until

# Creating 200 documents through one command takes minutes on a loaded machine.
pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True), pytest.mark.timeout(1800)]

BIG_SECTIONS = 5000
SMALL_DOCUMENTS = 200


def write_markdown(path: Path, tag: str, sections: int) -> Path:
    parts = [f"# {tag}\n"]
    for section in range(sections):
        words = " ".join(f"{tag}x{section}y{i}" for i in range(30))
        parts.append(f"\n## Part {section}\n\n{words}.\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts))
    return path


def status_of(project: str, filename: str) -> str | None:
    connection.close_if_unusable_or_obsolete()
    return Document.objects.filter(project__name=project, filename=filename).values_list("status", flat=True).first()


def test_a_small_upload_in_another_project_and_a_high_upload_finish_while_a_backlog_indexes(stack, tmp_path):
    big = write_markdown(tmp_path / "a" / "big.md", "big", BIG_SECTIONS)
    for number in range(SMALL_DOCUMENTS):
        write_markdown(tmp_path / "a" / f"small-{number:03d}.md", f"small{number}", 3)
    late = write_markdown(tmp_path / "b" / "late.md", "late", 3)
    urgent = write_markdown(tmp_path / "urgent" / "urgent.md", "urgent", 3)
    start_pipeline(stack)

    stack.manage("ingest", str(big), "--project", "fair-a", "--embedder", "hash")
    # 200 uploads through one command: generous on a loaded machine.
    stack.manage("ingest", str(tmp_path / "a"), "--project", "fair-a", timeout=1800)
    wait_until(
        lambda: Chunk.objects.filter(document__filename="big.md", status="ready").exists(),
        timeout=600,
        interval=0.5,
        message="A's big document embedding",
    )

    uploaded = time.monotonic()
    stack.manage("ingest", str(late), "--project", "fair-b", "--embedder", "hash")
    wait_until(lambda: status_of("fair-b", "late.md") == "ready", timeout=600, interval=0.2, message="B final")
    b_seconds = time.monotonic() - uploaded
    a_waiting = Document.objects.filter(project__name="fair-a").exclude(status__in=Document.FINAL_STATUSES).count()
    big_status = status_of("fair-a", "big.md")
    assert big_status == "indexing"
    assert a_waiting > 0

    uploaded = time.monotonic()
    stack.manage("ingest", str(urgent), "--project", "fair-a", "--priority", "high")
    wait_until(lambda: status_of("fair-a", "urgent.md") == "ready", timeout=600, interval=0.2, message="urgent final")
    urgent_seconds = time.monotonic() - uploaded
    big_left = Chunk.objects.filter(document__filename="big.md", status__in=Chunk.ACTIVE_STATUSES).count()
    assert status_of("fair-a", "big.md") == "indexing" and big_left > 0

    figures.record(
        "fair share and priority",
        b_seconds_to_ready=round(b_seconds, 1),
        a_documents_not_final_then=a_waiting,
        urgent_seconds_to_ready=round(urgent_seconds, 1),
        big_chunks_still_waiting_then=big_left,
    )
