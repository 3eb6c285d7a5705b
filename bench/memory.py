"""Row 7: memory and bulk writes. Peak resident memory of parsing and
chunking the corpus's largest files, each in a fresh process; peak memory
of document_parse on a generated 50 MB text file (against a 5 MB one: is
memory bounded, or does it grow with the file?); and the rate of the
bulk_create path that stores a document's chunks, against COPY."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
import time

from bench import data, env
from bench.report import Result, say

LARGEST_FILES = 5
INGEST_SIZES_MB = (5, 50)
INSERT_CHUNKS = 20_000


def probe(mode: str, path) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "bench.memory_probe", mode, str(path)],
        cwd=env.BASE_DIR,
        env=env.worker_environment(MIRAGE_LOG_LEVEL="WARNING"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    if result.returncode != 0:
        raise RuntimeError(f"memory probe {mode} {path} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def largest_corpus_files(count: int):
    files = [
        path
        for path in env.CORPUS.rglob("*")
        if path.is_file()
        and path.parent.name != "adversarial"
        and path.suffix.lower() in (".md", ".pdf", ".epub", ".txt", ".html")
    ]
    return sorted(files, key=lambda path: path.stat().st_size, reverse=True)[:count]


def generate_text(path, megabytes: int) -> None:
    """Plain text of corpus words in paragraphs, `megabytes` MiB exactly
    (the upload limit is 50 MiB)."""
    words = data.corpus_words()
    rng = random.Random(megabytes)
    target = megabytes * 1024 * 1024
    written = 0
    with open(path, "w", encoding="ascii", errors="replace") as out:
        number = 0
        while written < target:
            start = rng.randrange(len(words) - 120)
            paragraph = f"{number}. " + " ".join(words[start : start + rng.randint(40, 120)]) + ".\n\n"
            paragraph = paragraph.encode("ascii", "replace").decode()
            if written + len(paragraph) > target:
                paragraph = paragraph[: target - written]
            out.write(paragraph)
            written += len(paragraph)
            number += 1


def insert_rates(count: int) -> tuple[float, float]:
    """Chunks per second of Chunk.objects.bulk_create (the parse path, in
    batches of parsing.INSERT_BATCH_SIZE) and of COPY, on the same rows."""
    from django.db import transaction
    from django.utils import timezone

    from documents import services
    from documents.models import Chunk, Document
    from documents.services import parsing

    project = services.project_create(name="bulk-insert", embedder="hash")
    documents = Document.objects.bulk_create(
        [
            Document(
                project=project,
                filename=f"bulk-{n}.md",
                file=f"bench/bulk-{n}.md",
                file_type="markdown",
                size_bytes=1,
                content_sha256=f"{n:064d}",
                status=Document.Status.INDEXING,
            )
            for n in range(2)
        ]
    )
    words = data.corpus_words()
    texts = data.word_windows(words, count, 250, seed=7)
    now = timezone.now()
    chunks = [
        Chunk(
            document=documents[0],
            position=position,
            content=text,
            content_sha256=hashlib.sha256(text.encode()).hexdigest(),
            token_count=250,
            structure={"heading_path": ["Bulk", f"Part {position}"]},
            status=Chunk.Status.PENDING,
            dispatched_at=now,
        )
        for position, text in enumerate(texts)
    ]
    started = time.perf_counter()
    with transaction.atomic():
        Chunk.objects.bulk_create(chunks, batch_size=parsing.INSERT_BATCH_SIZE)
    bulk_seconds = time.perf_counter() - started
    rows = [
        (
            documents[1].id,
            chunk.position,
            chunk.content,
            chunk.content_sha256,
            chunk.token_count,
            chunk.structure,
            "pending",
            None,
            "",
            0,
            "",
            now,
            now,
            now,
            "",
        )
        for chunk in chunks
    ]
    started = time.perf_counter()
    with transaction.atomic():
        data.copy_rows("documents_chunk", data.CHUNK_COLUMNS, rows)
    copy_seconds = time.perf_counter() - started
    return count / bulk_seconds, count / copy_seconds


def run(*, quick: bool) -> list[Result]:
    results = []
    files = largest_corpus_files(2 if quick else LARGEST_FILES)
    say(f"  parse + chunk (local tokenizer) of the {len(files)} largest corpus files, one process each")
    parsed = []
    for path in files:
        figures = probe("parse", path)
        parsed.append((path, figures))
        say(
            f"    {path.name} ({path.stat().st_size / 1e6:.1f} MB): peak {figures['peak_mb']:.0f} MB "
            f"(resident after imports {figures['baseline_mb']:.0f} MB), {figures['chunks']} chunks in {figures['seconds']:.1f} s"
        )
    worst_path, worst = max(parsed, key=lambda item: item[1]["peak_mb"])
    results.append(
        Result(
            row=f"7 memory: parse + chunk, largest of the {len(files)} largest corpus files",
            measured=f"{worst['peak_mb']:.0f} MB peak",
            baseline=f"{worst['baseline_mb']:.0f} MB",
            ratio=worst["peak_mb"] / worst["baseline_mb"],
            goal="bounded, stated",
            met=None,
            notes=[
                "peak RSS while parsing (resident size after imports and tokenizer load in brackets): "
                + "; ".join(
                    f"{path.name} {path.stat().st_size / 1e6:.1f} MB -> {figures['peak_mb']:.0f} MB "
                    f"({figures['baseline_mb']:.0f})"
                    for path, figures in parsed
                )
                + f"; worst: {worst_path.name}"
            ],
        )
    )

    sizes = (1, 5) if quick else INGEST_SIZES_MB
    ingested = {}
    for megabytes in sizes:
        path = env.WORK_DIR / f"ingest-{megabytes}mb.txt"
        generate_text(path, megabytes)
        say(f"  document_parse of a generated {megabytes} MiB text file (hash embedder), own process")
        try:
            figures = probe("ingest", path)
        finally:
            path.unlink(missing_ok=True)
        ingested[megabytes] = figures
        say(
            f"    peak {figures['peak_mb']:.0f} MB (resident before parse {figures['baseline_mb']:.0f} MB), "
            f"{figures['chunks']} chunks, {figures['status']}, {figures['seconds']:.1f} s"
        )
        # Thousands of embed messages were queued with no worker to take them.
        env.redis_client().flushdb()
    small, large = (ingested[size] for size in sizes)
    growth = (large["peak_mb"] - small["peak_mb"]) / (sizes[1] - sizes[0])
    ratio = large["peak_mb"] / small["peak_mb"]
    results.append(
        Result(
            row=f"7 memory: document_parse of a {sizes[1]} MiB text file vs a {sizes[0]} MiB one",
            measured=f"{large['peak_mb']:.0f} MB peak",
            baseline=f"{small['peak_mb']:.0f} MB peak",
            ratio=ratio,
            goal="bounded: <= 2x",
            met=ratio <= 2.0,
            notes=[
                f"{sizes[1]} MiB: {large['chunks']} chunks in {large['seconds']:.0f} s, {large['status']}; "
                f"peak grows {growth:.1f} MB per MiB of input; process before parsing "
                f"{large['baseline_mb']:.0f} MB"
            ],
        )
    )

    count = 5_000 if quick else INSERT_CHUNKS
    say(f"  bulk insert of {count} chunks: bulk_create (as document_parse) vs COPY")
    bulk_rate, copy_rate = insert_rates(count)
    say(f"    bulk_create {bulk_rate:.0f} chunks/s, COPY {copy_rate:.0f} chunks/s")
    results.append(
        Result(
            row=f"7 bulk chunk insert ({count} chunks of ~250 words): bulk_create vs COPY",
            measured=f"{bulk_rate:.0f} chunks/s",
            baseline=f"{copy_rate:.0f} chunks/s",
            ratio=bulk_rate / copy_rate,
            goal="stated",
            met=None,
        )
    )
    return results
