"""Row 2: model-bound throughput. 500 chunks of real Markdown from the
corpus through the pipeline with the `local` model (one task per chunk, the
embed worker's micro-batcher joining concurrent tasks into one model call),
against SentenceTransformer.encode on the same 500 texts in large batches
in one process: how much of the model's own speed the pipeline keeps."""

from __future__ import annotations

import time

from bench import data, env
from bench.processes import ProcessGroup, coalescing_stats
from bench.report import Result, say

GOAL = 0.9
# Real prose and code first, the long release notes last: the prefix taken
# is mostly varied text.
SOURCES = [
    "pyguide.md",
    "pgvector-README.md",
    "fastapi-sql-databases.md",
    "httpx-transports.md",
    "markdown-style.md",
    "fastapi-release-notes.md",
]
WARMUP_SOURCE = "jekyll-front-matter.md"
BATCH_SIZES = (16, 64)
# Embed worker concurrency: the Procfile's, then one that lets the
# micro-batcher gather batches as large as the baseline's.
CONCURRENCIES = (8, 32)


def corpus_markdown() -> list[str]:
    lines: list[str] = []
    for name in SOURCES:
        lines.extend((env.CORPUS / "markdown" / name).read_text(encoding="utf-8").splitlines(keepends=True))
        lines.append("\n")
    return lines


def document_with_chunks(target: int) -> tuple[bytes, int]:
    """The shortest prefix (in lines) of the corpus Markdown that the
    pipeline cuts into at least `target` chunks, found by bisection with the
    pipeline's own parser, chunker and the local model's tokenizer."""
    lines = corpus_markdown()
    low, high = 1, len(lines)
    while low < high:
        middle = (low + high) // 2
        if data.count_chunks("".join(lines[:middle]).encode(), "doc.md", "local") >= target:
            high = middle
        else:
            low = middle + 1
    content = "".join(lines[:low]).encode()
    return content, data.count_chunks(content, "doc.md", "local")


def batcher_stats(node: str) -> dict:
    return coalescing_stats(node).get("sentence-transformers/all-MiniLM-L6-v2", {"batches": 0, "items": 0})


def load_model():
    from documents.embeddings.local import LocalEmbedder

    model = LocalEmbedder().model
    model.encode(["warm-up text"] * 32, batch_size=16, normalize_embeddings=True, show_progress_bar=False)
    return model


def encode_rates(model, texts: list[str], order) -> dict[int, float]:
    """Texts per second of SentenceTransformer.encode over `texts`, per batch size."""
    rates = {}
    for batch_size in order:
        started = time.perf_counter()
        model.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        rates[batch_size] = len(texts) / (time.perf_counter() - started)
        say(f"    encode, batch size {batch_size}: {rates[batch_size]:.1f} texts/s")
    return rates


def run_pipeline(*, content: bytes, concurrency: int, label: str) -> tuple[data.RunTimes, int, int]:
    """One pass of the document through fresh workers (embed worker: threads,
    `concurrency`), after a warm-up document that loads the model. Returns
    the run's times and the embed worker's model calls and texts in it."""
    from django.db import connection

    from documents import services

    with connection.cursor() as cursor:
        # A previous pass's vectors would be served from the cache.
        cursor.execute("TRUNCATE documents_embeddingcacheentry")
    warmup = (env.CORPUS / "markdown" / WARMUP_SOURCE).read_bytes()
    with ProcessGroup(f"model-bound-{concurrency}") as group:
        say(f"  starting ingest (prefork 1) and embed (threads, concurrency {concurrency}) workers")
        _, embed_node = group.pipeline_workers(pool="threads", concurrency=concurrency)
        project = services.project_create(name=f"model-bound-{label}", embedder="local")
        say("  warm-up document (loads the model in the embed worker)")
        data.wait_job(data.submit(project, warmup, WARMUP_SOURCE).job.id, timeout=600)
        before = batcher_stats(embed_node)
        say("  pipeline ...")
        times = data.wait_job(data.submit(project, content, "corpus-prefix.md").job.id, timeout=1200)
        after = batcher_stats(embed_node)
    if times.status not in ("ready", "partial"):
        raise RuntimeError(f"document ended {times.status}")
    batches, texts = after["batches"] - before["batches"], after["items"] - before["items"]
    say(
        f"    {times.from_dispatch:.1f} s from end of parse to final ({times.chunks / times.from_dispatch:.1f} "
        f"chunks/s); {batches} model calls for {texts} texts"
    )
    return times, batches, texts


def run(*, quick: bool) -> list[Result]:
    from documents.models import Chunk

    target = 100 if quick else 500
    say(f"  finding a corpus prefix of {target} chunks")
    content, expected = document_with_chunks(target)
    texts = data.chunk_texts(content, "doc.md", "local")
    say(f"    {expected} chunks")
    model = load_model()
    # An untimed pass first: the first encode of texts this long runs slower.
    model.encode(texts, batch_size=16, normalize_embeddings=True, show_progress_bar=False)
    say(f"  baseline before: SentenceTransformer.encode on the same {len(texts)} texts in this process")
    rates_before = encode_rates(model, texts, BATCH_SIZES)
    passes = {}
    for concurrency in CONCURRENCIES[:1] if quick else CONCURRENCIES:
        passes[concurrency] = run_pipeline(content=content, concurrency=concurrency, label=str(concurrency))
        stored = list(
            Chunk.objects.filter(document_id=passes[concurrency][0].document_id)
            .order_by("position")
            .values_list("content", flat=True)
        )
        if stored != texts:
            raise RuntimeError("the pipeline's chunks differ from the texts the baseline encoded")
    say("  baseline after: the same encodes again")
    rates_after = encode_rates(model, texts, tuple(reversed(BATCH_SIZES)))
    # Bracketing the pipeline runs evens out drift in the machine's load.
    rates = {size: (rates_before[size] + rates_after[size]) / 2 for size in BATCH_SIZES}
    best_batch = max(rates, key=rates.get)
    best_rate = rates[best_batch]
    distinct = len(set(texts))
    results = []
    for concurrency, (times, batches, batched_texts) in passes.items():
        pipeline_rate = times.chunks / times.from_dispatch
        ratio = pipeline_rate / best_rate
        setting = "the Procfile's" if concurrency == CONCURRENCIES[0] else "alternative"
        results.append(
            Result(
                row=f"2 model-bound, embed worker threads x{concurrency} ({setting}): {times.chunks} corpus chunks, "
                "local model, one task per chunk",
                measured=f"{pipeline_rate:.1f} chunks/s",
                baseline=f"{best_rate:.1f} texts/s",
                ratio=ratio,
                goal=f">= {GOAL:.2f}",
                met=ratio >= GOAL,
                notes=[
                    f"threads x{concurrency}: pipeline {times.from_dispatch:.1f} s from end of parse to final "
                    f"({times.from_job_start:.1f} s from job start); the embed worker made {batches} model calls "
                    f"for {batched_texts} texts ({batched_texts / max(batches, 1):.1f} texts per call)"
                ],
            )
        )
    results[0].notes.append(
        "encode baseline by batch size (mean of the runs before and after the pipeline passes): "
        + ", ".join(
            f"{size}: {rates[size]:.1f} texts/s ({rates_before[size]:.1f}, {rates_after[size]:.1f})"
            for size in BATCH_SIZES
        )
        + f"; the best, batch size {best_batch}, is the baseline; {distinct} distinct texts of {len(texts)}"
    )
    return results
