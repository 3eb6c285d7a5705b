"""Row 1: orchestration overhead. One document of 5,000 chunks through the
whole pipeline with the `hash` embedder (real ingest and embed workers, real
Redis and PostgreSQL), against a no-op Celery chord of as many tasks on the
same workers: what the pipeline's bookkeeping costs per chunk beyond
Celery's own per-task cost."""

from __future__ import annotations

import os
import random
import time

from bench import data
from bench.processes import ProcessGroup, coalescing_stats
from bench.report import Result, say

GOAL = 0.8
# (pool, concurrency) of the embed worker; the first is the Procfile's and
# carries the goal.
SETTINGS = [("threads", 8), ("prefork", 2)]
# MIRAGE_BENCH_ROW1_SETTINGS=threads-8 (comma-separated pool-concurrency)
# measures only those settings: for comparing one change quickly.
ONLY_SETTINGS = os.environ.get("MIRAGE_BENCH_ROW1_SETTINGS", "")
WORDS_PER_CHUNK = 250


def make_document(*, chunks: int, seed: int) -> bytes:
    """Markdown whose every section becomes exactly one chunk (a heading per
    section, a body under the chunk size), each with distinct text so no
    chunk is served from the embedding cache."""
    words = data.corpus_words()
    rng = random.Random(seed)
    parts = []
    for number in range(chunks):
        start = rng.randrange(len(words) - WORDS_PER_CHUNK)
        body = " ".join(words[start : start + WORDS_PER_CHUNK])
        parts.append(f"\n## Part {number}\n\nPart {number} of run {seed}: {body}.\n")
    return "".join(parts).encode()


def run_chord(size: int) -> float:
    """Seconds from applying a chord of `size` no-op tasks on the embed queue
    to its callback (on the ingest queue, like finalize_document) having run."""
    from celery import chord, signature

    from mirage.celery import app

    header = [signature("bench.noop", args=[number]).set(queue="embed") for number in range(size)]
    callback = signature("bench.noop_callback", immutable=True).set(queue="ingest")
    started = time.time()
    result = chord(header)(callback)
    # A fresh handle on the callback alone: the chord's own result would
    # fetch the state of every header task before returning.
    finished = app.AsyncResult(result.id).get(timeout=900)
    return finished - started


def run_pipeline(*, content: bytes, name: str) -> data.RunTimes:
    from documents import services

    project = services.project_create(name=name, embedder="hash")
    submission = data.submit(project, content, f"{name}.md")
    times = data.wait_job(submission.job.id, timeout=900)
    if times.status != "ready":
        raise RuntimeError(f"document {times.document_id} ended {times.status}, not ready")
    return times


def embed_task_profile(content: bytes) -> tuple[int, float]:
    """SQL statements one chunk_embed sends (run here, on a chunk of an
    indexing document with a running job, as a worker would), and the hash
    embedder's own time per chunk over the document's texts in this process.
    Neither is part of the ratio: they explain where a chunk's time goes."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from documents import jobkinds, services
    from documents.embeddings.hashing import HashEmbedder
    from documents.models import Chunk, Document
    from jobs.models import Job

    texts = data.chunk_texts(content, "doc.md", "hash")
    project = services.project_create(name="embed-task-profile", embedder="hash")
    job = Job.objects.create(
        kind=jobkinds.INDEX_DOCUMENT,
        status=Job.Status.RUNNING,
        project_id=project.id,
        started_at=timezone.now(),
        chunks_created=len(texts),
    )
    document = Document.objects.create(
        project=project,
        filename="profile.md",
        file="bench/profile.md",
        file_type="markdown",
        size_bytes=1,
        content_sha256="0" * 64,
        status=Document.Status.INDEXING,
        current_job=job,
        generation=1,
    )
    chunk = Chunk.objects.create(
        document=document,
        position=1,
        content=texts[1] + " profile",
        content_sha256="1" * 64,
        status=Chunk.Status.PENDING,
    )
    with CaptureQueriesContext(connection) as captured:
        services.chunk_embed(chunk_id=chunk.id)
    started = time.perf_counter()
    HashEmbedder().embed_batch(texts)
    return len(captured.captured_queries), (time.perf_counter() - started) / len(texts)


def per_operation(before: dict, after: dict) -> str:
    """Items per batch of each coalescer of the embed worker during a run
    (prefork workers answer for one child process)."""
    parts = []
    for name, counts in after.items():
        batches = counts["batches"] - before.get(name, {}).get("batches", 0)
        items = counts["items"] - before.get(name, {}).get("items", 0)
        if batches:
            parts.append(f"{name} {items / batches:.1f} ({items} in {batches})")
    return ", ".join(parts) or "none reported"


def cpu_per_item(before: dict[str, float], after: dict[str, float], items: int) -> str:
    """Milliseconds of CPU per item of each process role between two
    readings of ProcessGroup.cpu_seconds."""
    return ", ".join(f"{role} {(after[role] - before.get(role, 0.0)) * 1000 / items:.2f} ms" for role in after)


def measure_setting(*, pool: str, concurrency: int, chunks: int, seed: int) -> Result:
    from bench import env

    env.reset_state()
    content = make_document(chunks=chunks, seed=seed)
    expected = data.count_chunks(content, "doc.md", "hash")
    label = f"{pool}-{concurrency}"
    with ProcessGroup(f"orchestration-{label}") as group:
        say(f"  starting ingest (prefork 1) and embed ({pool}, concurrency {concurrency}) workers")
        _, embed_node = group.pipeline_workers(pool=pool, concurrency=concurrency)
        say("  warm-up: a 200-task chord and a 100-chunk document")
        run_chord(200)
        run_pipeline(content=make_document(chunks=100, seed=seed + 1000), name=f"warmup-{label}")
        say(f"  no-op chord of {chunks} tasks ...")
        cpu = group.cpu_seconds()
        chord_first = run_chord(chunks)
        chord_cpu = cpu_per_item(cpu, group.cpu_seconds(), chunks)
        say(f"    {chord_first:.1f} s ({chunks / chord_first:.0f} tasks/s); CPU per task: {chord_cpu}")
        say(f"  pipeline: one document of {expected} chunks ...")
        before, cpu = coalescing_stats(embed_node), group.cpu_seconds()
        times = run_pipeline(content=content, name=f"orchestration-{label}")
        pipeline_cpu = cpu_per_item(cpu, group.cpu_seconds(), times.chunks)
        sharing = per_operation(before, coalescing_stats(embed_node))
        say(
            f"    {times.from_dispatch:.1f} s from end of parse to final ({times.chunks / times.from_dispatch:.0f} "
            f"chunks/s); {times.from_job_start:.1f} s from job start"
        )
        say(f"    CPU per chunk (parse included): {pipeline_cpu}")
        say(f"    chunks per operation: {sharing}")
        say(f"  no-op chord of {chunks} tasks again ...")
        chord_second = run_chord(chunks)
        say(f"    {chord_second:.1f} s ({chunks / chord_second:.0f} tasks/s)")
    statements, embed_seconds = embed_task_profile(content)
    say(
        f"    one chunk_embed sends {statements} SQL statements; the hash embedder alone takes "
        f"{embed_seconds * 1000:.2f} ms per chunk"
    )
    chord_rate = chunks / ((chord_first + chord_second) / 2)
    pipeline_rate = times.chunks / times.from_dispatch
    ratio = pipeline_rate / chord_rate
    return Result(
        row=f"1 orchestration, embed worker {pool} x{concurrency}"
        f"{' (the Procfile' + chr(39) + 's)' if (pool, concurrency) == SETTINGS[0] else ' (alternative)'}: "
        f"{times.chunks}-chunk document vs no-op chord",
        measured=f"{pipeline_rate:.0f} chunks/s",
        baseline=f"{chord_rate:.0f} tasks/s",
        ratio=ratio,
        goal=f">= {GOAL:.2f}",
        met=ratio >= GOAL,
        notes=[
            f"{pool} x{concurrency}: pipeline {times.from_dispatch:.1f} s from end of parse (chunk insert, "
            f"commit and chord dispatch included) to final; {times.from_job_start:.1f} s from job start "
            f"({times.chunks / times.from_job_start:.0f} chunks/s); no-op chord runs {chord_first:.1f} s "
            f"and {chord_second:.1f} s; one chunk_embed sends {statements} SQL statements, the hash embedder "
            f"alone takes {embed_seconds * 1000:.2f} ms per chunk (in one process); chunks per operation: "
            f"{sharing}; CPU per no-op task: {chord_cpu}; CPU per chunk (parse included): {pipeline_cpu}"
        ],
    )


def run(*, quick: bool) -> list[Result]:
    chunks = 1000 if quick else 5000
    settings = SETTINGS[:1] if quick else SETTINGS
    if ONLY_SETTINGS:
        wanted = {part.strip() for part in ONLY_SETTINGS.split(",")}
        settings = [setting for setting in settings if f"{setting[0]}-{setting[1]}" in wanted]
    return [
        measure_setting(pool=pool, concurrency=concurrency, chunks=chunks, seed=index + 1)
        for index, (pool, concurrency) in enumerate(settings)
    ]
