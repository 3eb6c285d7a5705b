"""Row 4: semantic search. 100,000 chunks of 384 dimensions (the `hash`
embedder's vectors of corpus text windows), loaded with COPY, then the
per-model partial HNSW index built. documents.search.semantic, the
product's search, against its HNSW query with index scans disabled (an
exact scan of every row): latency and recall@10, for a project holding 99%
of the chunks (practically unfiltered; semantic() walks the HNSW index) and
one holding 1% (filtered; semantic() computes the project's distances
exactly, as it does for every project up to MIRAGE_EXACT_SEARCH_MAX_CHUNKS)."""

from __future__ import annotations

import statistics
import time

from bench import data
from bench.report import Result, say

LATENCY_GOAL = 10.0
RECALL_GOAL = 0.95
K = 10
WORDS_PER_CHUNK = 40
WORDS_PER_QUERY = 10
MAINTENANCE_WORK_MEM = "1GB"
MODEL = "hash-384"


def load_chunks(projects_and_counts, *, documents_per_project: int) -> dict:
    """COPY the chunks, spread over a few documents per project; returns
    timings."""
    from django.utils import timezone

    from documents.embeddings.hashing import HashEmbedder
    from documents.models import Document

    embedder = HashEmbedder()
    words = data.corpus_words()
    total = sum(count for _, count in projects_and_counts)
    started = time.perf_counter()
    texts = data.word_windows(words, total, WORDS_PER_CHUNK, seed=4)
    vectors = [data.vector_text(item.vector) for item in embedder.embed_batch(texts)]
    embed_seconds = time.perf_counter() - started
    now = timezone.now()
    rows = []
    offset = 0
    for project, count in projects_and_counts:
        documents = Document.objects.bulk_create(
            [
                Document(
                    project=project,
                    filename=f"search-{number}.txt",
                    file=f"bench/search-{number}.txt",
                    file_type="text",
                    size_bytes=1,
                    content_sha256=f"{project.id:032d}{number:032d}",
                    status=Document.Status.READY,
                    parsing_finished_at=now,
                    embedding_finished_at=now,
                    indexed_at=now,
                )
                for number in range(documents_per_project)
            ]
        )
        for position in range(count):
            document = documents[position % len(documents)]
            rows.append(
                (
                    document.id,
                    position,
                    texts[offset + position],
                    "0" * 64,
                    WORDS_PER_CHUNK,
                    "{}",
                    "ready",
                    vectors[offset + position],
                    MODEL,
                    1,
                    "",
                    now,
                    now,
                    now,
                    "",
                )
            )
        offset += count
    started = time.perf_counter()
    data.copy_rows("documents_chunk", data.CHUNK_COLUMNS, rows)
    copy_seconds = time.perf_counter() - started
    return {"embed_seconds": embed_seconds, "copy_seconds": copy_seconds}


def build_index() -> float:
    from django.db import connection

    from documents import vectorindex

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_chunk, documents_document")
        cursor.execute(f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
        # One parallel worker plus the leader: one process per core.
        cursor.execute("SET max_parallel_maintenance_workers = 1")
        started = time.perf_counter()
        cursor.execute(vectorindex.create_index_statement(MODEL, 384))
        seconds = time.perf_counter() - started
        cursor.execute("RESET maintenance_work_mem")
        cursor.execute("RESET max_parallel_maintenance_workers")
        cursor.execute(f"SELECT pg_size_pretty(pg_relation_size('{vectorindex.index_name(MODEL, 384)}'))")
        say(f"    index size {cursor.fetchone()[0]}")
    return seconds


def timed_search(project, vector, *, exact: bool, bitmap_only: bool = False, k: int = K) -> tuple[float, list[int]]:
    """Seconds and the first K chunk ids of documents.search.semantic, the
    product's search. With `exact`, the baseline: its HNSW query
    (semantic_ann) with index scans off, so every distance is computed; with
    `bitmap_only` as well, sequential scans off too, so the project's rows are
    found through their B-tree indexes (bitmap scans)."""
    from django.db import connection, transaction

    from documents.search import semantic, semantic_ann

    with transaction.atomic():
        if exact:
            with connection.cursor() as cursor:
                # HNSW is only reachable through an index scan: without
                # them the same query computes every distance.
                cursor.execute("SET LOCAL enable_indexscan = off")
                if bitmap_only:
                    cursor.execute("SET LOCAL enable_seqscan = off")
        started = time.perf_counter()
        hits = (semantic_ann if exact else semantic)(project=project, vector=vector, k=k)
        seconds = time.perf_counter() - started
    return seconds, [hit.chunk_id for hit in hits[:K]]


def plan_summary(project, vector, *, exact: bool) -> str:
    """The scan nodes of the plan PostgreSQL chose for the product's query."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    from documents.search import semantic, semantic_ann

    with CaptureQueriesContext(connection) as captured:
        (semantic_ann if exact else semantic)(project=project, vector=vector, k=K)
    query = next(entry["sql"] for entry in captured.captured_queries if "<=>" in entry["sql"])
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), set_config('hnsw.ef_search', '100', true)"
        )
        if exact:
            cursor.execute("SET LOCAL enable_indexscan = off")
        cursor.execute("EXPLAIN " + query)
        lines = [row[0].strip() for row in cursor.fetchall()]
    nodes = [line.lstrip("-> ").split("  (")[0] for line in lines if "Scan" in line]
    return "; ".join(nodes)


def diagnostics(project, queries, exact_ids: list[list[int]], *, filtered: bool) -> str:
    """Not part of the ratios. For the large project: what a wider HNSW
    search (ef_search 400, through semantic(k=400), first K kept) would give.
    For the small one: the exact scan through B-tree bitmap scans of the
    project's rows."""
    if filtered:
        bitmap_times = [timed_search(project, vector, exact=True, bitmap_only=True)[0] for vector in queries]
        return (
            f"exact scan through bitmap index scans of the project's rows (sequential scans also off): "
            f"median {statistics.median(bitmap_times) * 1000:.1f} ms"
        )
    wide_times, wide_recalls = [], []
    for vector, truth in zip(queries, exact_ids, strict=True):
        seconds, ids = timed_search(project, vector, exact=False, k=400)
        wide_times.append(seconds)
        wide_recalls.append(len(set(ids) & set(truth)) / max(1, len(truth)))
    text = (
        f"with ef_search 400 (semantic(k=400), first {K} kept): recall {statistics.mean(wide_recalls):.3f}, "
        f"median {statistics.median(wide_times) * 1000:.1f} ms"
    )
    return text


def measure(project, label: str, queries, *, filtered: bool) -> list[Result]:
    for vector in queries[:5]:
        timed_search(project, vector, exact=False)
        timed_search(project, vector, exact=True)
    hnsw_times, exact_times, recalls, truths = [], [], [], []
    for vector in queries:
        hnsw_seconds, hnsw_ids = timed_search(project, vector, exact=False)
        exact_seconds, exact_ids = timed_search(project, vector, exact=True)
        hnsw_times.append(hnsw_seconds)
        exact_times.append(exact_seconds)
        truths.append(exact_ids)
        recalls.append(len(set(hnsw_ids) & set(exact_ids)) / max(1, len(exact_ids)))
    hnsw_ms, exact_ms = statistics.median(hnsw_times) * 1000, statistics.median(exact_times) * 1000
    recall = statistics.mean(recalls)
    hnsw_plan = plan_summary(project, queries[0], exact=False)
    exact_plan = plan_summary(project, queries[0], exact=True)
    say(
        f"    {label}: semantic() {hnsw_ms:.1f} ms, exact scan {exact_ms:.1f} ms (medians of {len(queries)}), "
        f"recall@{K} {recall:.3f}"
    )
    say(f"      plan, product query: {hnsw_plan}")
    say(f"      plan, index scans off: {exact_plan}")
    extra = diagnostics(project, queries, truths, filtered=filtered)
    say(f"      {extra}")
    ratio = exact_ms / hnsw_ms
    return [
        Result(
            row=f"4 search latency, {label}: semantic() vs exact scan",
            measured=f"{hnsw_ms:.1f} ms",
            baseline=f"{exact_ms:.1f} ms",
            ratio=ratio,
            goal=f">= {LATENCY_GOAL:.0f}x faster",
            met=ratio >= LATENCY_GOAL,
            notes=[
                f"{label}: p95 semantic() {sorted(hnsw_times)[int(0.95 * len(hnsw_times))] * 1000:.1f} ms, exact "
                f"{sorted(exact_times)[int(0.95 * len(exact_times))] * 1000:.1f} ms; plan of the product query: "
                f"{hnsw_plan}; with index scans off: {exact_plan}"
            ],
        ),
        Result(
            row=f"4 search recall@{K}, {label}: semantic() vs exact",
            measured=f"{recall:.3f}",
            baseline="1.000",
            ratio=recall,
            goal=f">= {RECALL_GOAL:.2f}",
            met=recall >= RECALL_GOAL,
            notes=[
                f"{label}: worst query recall {min(recalls):.2f}; queries under {RECALL_GOAL}: "
                f"{sum(1 for value in recalls if value < RECALL_GOAL)} of {len(recalls)}; diagnostics: {extra}"
            ],
        ),
    ]


def run(*, quick: bool) -> list[Result]:
    from django.db import connection

    from documents import services, vectorindex
    from documents.embeddings.hashing import HashEmbedder

    total = 20_000 if quick else 100_000
    query_count = 30 if quick else 100
    small = total // 100
    big_project = services.project_create(name="search-99-percent", embedder="hash")
    small_project = services.project_create(name="search-1-percent", embedder="hash")
    with connection.cursor() as cursor:
        # Built once after the load, as an operator would for a bulk import,
        # rather than updated row by row.
        cursor.execute(f"DROP INDEX IF EXISTS {vectorindex.index_name(MODEL, 384)}")
    say(
        f"  embedding and loading {total} chunks of {WORDS_PER_CHUNK} consecutive words from the "
        f"{len(data.corpus_words())}-word corpus text ({total - small} in one project, {small} in another)"
    )
    timings = load_chunks([(big_project, total - small), (small_project, small)], documents_per_project=10)
    say(
        f"    hash embedding {timings['embed_seconds']:.1f} s, COPY {timings['copy_seconds']:.1f} s "
        f"({total / timings['copy_seconds']:.0f} rows/s)"
    )
    say(f"  building the HNSW index (maintenance_work_mem {MAINTENANCE_WORK_MEM}, 1 parallel worker)")
    build_seconds = build_index()
    say(f"    built in {build_seconds:.1f} s")
    words = data.corpus_words()
    query_texts = data.word_windows(words, query_count, WORDS_PER_QUERY, seed=44)
    queries = [item.vector for item in HashEmbedder().embed_batch(query_texts)]
    results = measure(big_project, f"99% project ({total - small} chunks)", queries, filtered=False)
    results += measure(small_project, f"1% project ({small} of {total} chunks)", queries, filtered=True)
    results[0].notes.append(
        f"{total} chunks: hash embedding {timings['embed_seconds']:.0f} s, COPY {timings['copy_seconds']:.1f} s, "
        f"HNSW build {build_seconds:.0f} s (m=16, ef_construction=64, maintenance_work_mem {MAINTENANCE_WORK_MEM}, "
        "1 parallel maintenance worker)"
    )
    return results
