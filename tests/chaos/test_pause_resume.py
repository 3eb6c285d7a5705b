"""Pause and resume with real processes: a paused project makes no embedding
call 5 s after the pause, stays paused across a restart of every worker and
of beat, and on resume ends with every document `ready` and no chunk
embedded twice."""

from __future__ import annotations

import signal
import time
from collections import Counter

import pytest
from django.db import connection

from documents.models import Chunk, Document
from tests.chaos.conftest import RECONCILE_SECONDS
from tests.chaos.test_fault_injection import RECORDING, all_final, assert_settled, start_pipeline, write_documents
from tests.support import figures
from tests.support.embedders import CALLS_KEY
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]


def provider_calls(stack) -> list[tuple[float, str]]:
    calls = []
    for raw in stack.redis().lrange(CALLS_KEY, 0, -1):
        stamp, _, text = raw.decode().partition("|")
        calls.append((float(stamp), text))
    return calls


def ready_chunks(project: str) -> int:
    connection.close_if_unusable_or_obsolete()
    return Chunk.objects.filter(document__project__name=project, status="ready").count()


def test_paused_project_makes_no_call_after_5_seconds_survives_a_restart_and_resumes_without_duplicates(
    stack, tmp_path
):
    stack.env.update(MIRAGE_TEST_EMBED_DELAY="0.05")
    documents = write_documents(tmp_path / "docs", count=6, sections=60)
    total = 6 * 61  # a title chunk and 60 sections each
    start_pipeline(stack)
    stack.manage("ingest", str(documents), "--project", "held", "--embedder", RECORDING)
    wait_until(lambda: ready_chunks("held") >= 20, timeout=180, interval=0.1, message="embedding under way")

    stack.manage("pause", "--project", "held", "--reason", "provider maintenance")
    paused_at = time.time()
    # Watch the provider well past the 5-second window...
    wait_until(lambda: time.time() > paused_at + 10, timeout=30, interval=0.5)
    # ...then restart every process while paused, and watch again.
    for name in ("ingest", "embed", "beat"):
        stack.kill(name, signal.SIGKILL)
    start_pipeline(stack)
    restarted_at = time.time()
    wait_until(lambda: time.time() > restarted_at + 4 * RECONCILE_SECONDS + 4, timeout=60, interval=0.5)

    calls = provider_calls(stack)
    late = [stamp - paused_at for stamp, _ in calls if stamp > paused_at + 5]
    last_call = max(stamp for stamp, _ in calls) - paused_at
    embedded_while_paused = ready_chunks("held")
    statuses = set(Document.objects.filter(project__name="held").values_list("status", flat=True))
    assert late == []
    assert embedded_while_paused < total
    assert statuses <= {"pending", "indexing", "ready"} and statuses - {"ready"}
    assert "paused" in stack.manage("docstatus", "--project", "held").stdout

    resumed_at = time.time()
    stack.manage("resume", "--project", "held")
    wait_until(lambda: all_final("held", 6), timeout=300, interval=0.5, message="every document final")
    resumed_for = time.time() - resumed_at

    assert set(Document.objects.filter(project__name="held").values_list("status", flat=True)) == {"ready"}
    assert_settled("held")
    calls = provider_calls(stack)
    embedded = Counter(text for _, text in calls)
    assert len(embedded) == Chunk.objects.filter(document__project__name="held").count()
    assert [text for text, count in embedded.items() if count > 1] == []
    assert not Chunk.objects.filter(document__project__name="held", attempts__gt=1).exists()
    figures.record(
        "pause and resume",
        chunks=total,
        embedded_before_pause_settled=embedded_while_paused,
        last_provider_call_after_pause_seconds=round(last_call, 2),
        calls_after_5_seconds=len(late),
        seconds_from_resume_to_all_ready=round(resumed_for, 1),
    )
