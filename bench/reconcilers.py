"""Row 5: reconciler ticks must not grow with history. One tick of each beat
reconciler with 100,000 finished documents (with their jobs and chunks) in
the database, against the same tick on an empty database; and the plans
PostgreSQL chooses for their queries (the partial indexes on active rows
are what keep a tick independent of history)."""

from __future__ import annotations

import hashlib
import statistics
import time
from datetime import timedelta

from bench import data
from bench.report import Result, say

GOAL = 2.0
CHUNKS_PER_DOCUMENT = 3
TICKS = 30
BATCH = 20_000


def reconcilers():
    from documents import services
    from jobs import services as job_services

    return {
        "documents_finalize_settled": services.documents_finalize_settled,
        "chunks_redispatch_stuck": services.chunks_redispatch_stuck,
        "documents_redispatch_unparsed": services.documents_redispatch_unparsed,
        "jobs_fail_timed_out": job_services.jobs_fail_timed_out,
    }


def tick_times() -> dict[str, float]:
    """Median seconds of one tick of each reconciler, after warm-up."""
    results = {}
    for name, function in reconcilers().items():
        for _ in range(3):
            function()
        samples = []
        for _ in range(TICKS):
            started = time.perf_counter()
            function()
            samples.append(time.perf_counter() - started)
        results[name] = statistics.median(samples)
    return results


def plans() -> dict[str, list[str]]:
    """The scan nodes of every SELECT each reconciler sends, from EXPLAIN."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    found = {}
    for name, function in reconcilers().items():
        with CaptureQueriesContext(connection) as captured:
            function()
        nodes = []
        for entry in captured.captured_queries:
            sql = entry["sql"]
            if not sql.lstrip().upper().startswith("SELECT") or "pg_advisory" in sql:
                continue
            with connection.cursor() as cursor:
                cursor.execute("EXPLAIN " + sql)
                for (line,) in cursor.fetchall():
                    if "Scan" in line:
                        nodes.append(line.strip().lstrip("-> ").split("  (")[0])
        found[name] = nodes
    return found


def load_history(documents: int) -> float:
    """`documents` finished documents with a completed job each and
    CHUNKS_PER_DOCUMENT ready chunks, loaded with COPY. Returns seconds."""
    from django.db import connection
    from django.utils import timezone

    from documents import services

    started = time.perf_counter()
    project = services.project_create(name="history", embedder="hash")
    long_ago = timezone.now() - timedelta(days=3)
    with connection.cursor() as cursor:
        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM jobs_job")
        first_job = cursor.fetchone()[0] + 1
        cursor.execute("SELECT COALESCE(MAX(id), 0) FROM documents_document")
        first_document = cursor.fetchone()[0] + 1
    for start in range(0, documents, BATCH):
        numbers = range(start, min(documents, start + BATCH))
        data.copy_rows(
            "jobs_job",
            (
                "id",
                "kind",
                "status",
                "project_id",
                "subject_id",
                "progress_percentage",
                "progress_message",
                "files_scanned",
                "files_indexed",
                "chunks_created",
                "chunks_failed",
                "error_message",
                "error_type",
                "error_traceback",
                "created_at",
                "updated_at",
                "started_at",
                "completed_at",
                "metadata",
                "celery_task_id",
                "celery_chord_id",
            ),
            (
                (
                    first_job + n,
                    "index_document",
                    "completed",
                    project.id,
                    first_document + n,
                    100,
                    f"{CHUNKS_PER_DOCUMENT}/{CHUNKS_PER_DOCUMENT} chunks embedded",
                    0,
                    1,
                    CHUNKS_PER_DOCUMENT,
                    0,
                    "",
                    "",
                    "",
                    long_ago,
                    long_ago,
                    long_ago,
                    long_ago,
                    "{}",
                    "",
                    "",
                )
                for n in numbers
            ),
        )
        data.copy_rows(
            "documents_document",
            (
                "id",
                "project_id",
                "filename",
                "file",
                "file_type",
                "size_bytes",
                "content_sha256",
                "status",
                "error_message",
                "metadata",
                "generation",
                "current_job_id",
                "created_at",
                "updated_at",
                "parsing_started_at",
                "parsing_finished_at",
                "embedding_finished_at",
                "indexed_at",
            ),
            (
                (
                    first_document + n,
                    project.id,
                    f"history-{n}.md",
                    f"bench/history-{n}.md",
                    "markdown",
                    1000,
                    hashlib.sha256(str(n).encode()).hexdigest(),
                    "ready",
                    "",
                    "{}",
                    1,
                    first_job + n,
                    long_ago,
                    long_ago,
                    long_ago,
                    long_ago,
                    long_ago,
                    long_ago,
                )
                for n in numbers
            ),
        )
        # No reconciler reads a vector: the chunks carry a 1-dimensional
        # placeholder under a model name no HNSW index covers, so the load
        # measures row counts, not index builds.
        data.copy_rows(
            "documents_chunk",
            data.CHUNK_COLUMNS,
            (
                (
                    first_document + n,
                    position,
                    f"history chunk {position} of {n}",
                    "0" * 64,
                    4,
                    "{}",
                    "ready",
                    "[1]",
                    "bench-placeholder",
                    1,
                    "",
                    long_ago,
                    long_ago,
                    long_ago,
                    "",
                )
                for n in numbers
                for position in range(CHUNKS_PER_DOCUMENT)
            ),
        )
    with connection.cursor() as cursor:
        for table in ("jobs_job", "documents_document"):
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
        cursor.execute("VACUUM ANALYZE documents_document")
        cursor.execute("VACUUM ANALYZE documents_chunk")
        cursor.execute("VACUUM ANALYZE jobs_job")
    return time.perf_counter() - started


def run(*, quick: bool) -> list[Result]:
    documents = 10_000 if quick else 100_000
    say("  ticks on the empty database")
    empty = tick_times()
    say("    " + ", ".join(f"{name} {seconds * 1000:.2f} ms" for name, seconds in empty.items()))
    say(f"  loading {documents} finished documents, {documents} jobs, {documents * CHUNKS_PER_DOCUMENT} chunks")
    load_seconds = load_history(documents)
    say(f"    loaded in {load_seconds:.0f} s")
    full = tick_times()
    say("    " + ", ".join(f"{name} {seconds * 1000:.2f} ms" for name, seconds in full.items()))
    scans = plans()
    results = []
    for name in empty:
        ratio = full[name] / empty[name]
        say(f"    {name}: {ratio:.2f}x; plan: {'; '.join(scans[name]) or 'no SELECT'}")
        results.append(
            Result(
                row=f"5 reconciler tick, {name}: {documents} finished documents vs empty",
                measured=f"{full[name] * 1000:.2f} ms",
                baseline=f"{empty[name] * 1000:.2f} ms",
                ratio=ratio,
                goal=f"<= {GOAL:.0f}x",
                met=ratio <= GOAL,
                notes=[f"scans chosen with {documents} documents: {'; '.join(scans[name]) or 'no SELECT'}"],
            )
        )
    results[0].notes.append(
        f"medians of {TICKS} ticks after 3 warm-up ticks; history loaded with COPY in {load_seconds:.0f} s "
        f"({documents} documents, {documents} jobs, {documents * CHUNKS_PER_DOCUMENT} chunks)"
    )
    return results
