"""Row 8: filtered semantic search. One project of 100,000 chunks (the
`hash` embedder's vectors of corpus text windows, as in row 4) over 100
documents; two filters that each keep 1 % of it:

- `metadata`: one document of the 100 carries {"slice": "one-percent"}
  (a document-level filter: 1,000 chunks);
- `heading`: every hundredth chunk, spread over all documents, has the
  heading path ["Rare"] (a chunk-level filter: 1,000 chunks).

documents.search.semantic with the filter, as the API runs it (at most
MIRAGE_EXACT_SEARCH_MAX_CHUNKS chunks pass: the exact path), and forced
through the HNSW index with an iterative scan
(MIRAGE_EXACT_SEARCH_MAX_CHUNKS=0), against brute force (the exact path
with every distance computed): latency and recall@10."""

from __future__ import annotations

import statistics
import time

from bench import data
from bench.report import Result, say
from bench.vector_search import MODEL, WORDS_PER_QUERY, K, build_index, load_chunks

LATENCY_GOAL_MS = 100.0
RECALL_GOAL = 0.95


def _timed(project, vector, filters, *, exact_max: int | None) -> tuple[float, list[int]]:
    from django.conf import settings

    from documents.search import semantic, semantic_exact

    previous = settings.MIRAGE_EXACT_SEARCH_MAX_CHUNKS
    started = time.perf_counter()
    if exact_max is None:
        hits = semantic_exact(project=project, vector=vector, k=K, filters=filters)
    else:
        settings.MIRAGE_EXACT_SEARCH_MAX_CHUNKS = exact_max
        try:
            hits = semantic(project=project, vector=vector, k=K, filters=filters)
        finally:
            settings.MIRAGE_EXACT_SEARCH_MAX_CHUNKS = previous
    return time.perf_counter() - started, [hit.chunk_id for hit in hits]


def _measure(project, label: str, filters, queries) -> list[Result]:
    from django.conf import settings

    for vector in queries[:5]:
        _timed(project, vector, filters, exact_max=settings.MIRAGE_EXACT_SEARCH_MAX_CHUNKS)
        _timed(project, vector, filters, exact_max=0)
    results = []
    truth = [_timed(project, vector, filters, exact_max=None)[1] for vector in queries]
    for path, exact_max in (("as configured", settings.MIRAGE_EXACT_SEARCH_MAX_CHUNKS), ("HNSW iterative scan", 0)):
        times, recalls, short = [], [], 0
        for vector, expected in zip(queries, truth, strict=True):
            seconds, ids = _timed(project, vector, filters, exact_max=exact_max)
            times.append(seconds)
            recalls.append(len(set(ids) & set(expected)) / max(1, len(expected)))
            short += len(ids) < K
        median_ms = statistics.median(times) * 1000
        p95_ms = sorted(times)[int(0.95 * len(times))] * 1000
        recall = statistics.mean(recalls)
        say(
            f"    {label}, {path}: median {median_ms:.1f} ms, p95 {p95_ms:.1f} ms, recall@{K} {recall:.3f}, "
            f"answers short of {K}: {short}"
        )
        results.append(
            Result(
                row=f"8 filtered search, {label}, {path}: latency / recall@{K}",
                measured=f"{median_ms:.1f} ms / {recall:.3f}",
                baseline="brute force / 1.000",
                ratio=recall,
                goal=f"< {LATENCY_GOAL_MS:.0f} ms, recall >= {RECALL_GOAL}",
                met=median_ms < LATENCY_GOAL_MS and recall >= RECALL_GOAL,
                notes=[
                    f"{label}, {path}: p95 {p95_ms:.1f} ms, worst query recall {min(recalls):.2f}, "
                    f"answers short of {K}: {short} of {len(queries)}"
                ],
            )
        )
    return results


def run(*, quick: bool) -> list[Result]:
    from django.db import connection

    from documents import services, vectorindex
    from documents.embeddings.hashing import HashEmbedder
    from documents.models import Document
    from documents.search import SearchFilters

    total = 20_000 if quick else 100_000
    query_count = 30 if quick else 100
    project = services.project_create(name="filtered-search", embedder="hash")
    with connection.cursor() as cursor:
        cursor.execute(f"DROP INDEX IF EXISTS {vectorindex.index_name(MODEL, 384)}")
    say(f"  embedding and loading {total} chunks over 100 documents")
    timings = load_chunks([(project, total)], documents_per_project=100)
    say(f"    hash embedding {timings['embed_seconds']:.1f} s, COPY {timings['copy_seconds']:.1f} s")
    first = Document.objects.filter(project=project).order_by("id").first()
    Document.objects.filter(id=first.id).update(metadata={"slice": "one-percent"})
    with connection.cursor() as cursor:
        cursor.execute(
            """UPDATE documents_chunk SET structure = '{"heading_path": ["Rare"]}'
                WHERE document_id IN (SELECT id FROM documents_document WHERE project_id = %s)
                  AND position %% 100 = 0""",
            [project.id],
        )
    say("  building the HNSW index")
    say(f"    built in {build_index():.1f} s")
    query_texts = data.word_windows(data.corpus_words(), query_count, WORDS_PER_QUERY, seed=88)
    queries = [item.vector for item in HashEmbedder().embed_batch(query_texts)]
    results = _measure(
        project,
        f"metadata filter, 1% ({total // 100} of {total} chunks)",
        SearchFilters(metadata={"slice": "one-percent"}),
        queries,
    )
    results += _measure(
        project,
        f"heading filter, 1% ({total // 100} of {total} chunks, spread)",
        SearchFilters(heading=("Rare",)),
        queries,
    )
    return results
