"""Semantic (pgvector), keyword (PostgreSQL full text) and hybrid search
within one project."""
from __future__ import annotations

import json
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from documents.models import Project
from documents.vectorindex import vector_literal

MODES = ("semantic", "keyword", "hybrid")
# Reciprocal rank fusion constant (Cormack et al.): damps the head of each list.
RRF_K = 60
MAX_K = 100


@dataclass(frozen=True)
class SearchHit:
    chunk_id: int
    document_id: int
    filename: str
    position: int
    content: str
    structure: dict
    score: float


_COLUMNS = "c.id, c.document_id, d.filename, c.position, c.content, c.structure"


def _hit(row, score: float) -> SearchHit:
    chunk_id, document_id, filename, position, content, structure = row[:6]
    # Raw cursors hand jsonb back as text (Django decodes JSONField itself).
    if isinstance(structure, str):
        structure = json.loads(structure)
    return SearchHit(chunk_id, document_id, filename, position, content, structure, score)


def semantic(*, project: Project, vector, k: int) -> list[SearchHit]:
    """Nearest chunks of the project by cosine distance. A small project is
    searched exactly (its rows are few, and an index walk would have to skip
    everyone else's); a larger one through the model's HNSW index."""
    if _searchable_chunks_at_most(project, settings.MIRAGE_EXACT_SEARCH_MAX_CHUNKS):
        return semantic_exact(project=project, vector=vector, k=k)
    return semantic_ann(project=project, vector=vector, k=k)


# The project's documents, listed first so that the planner reaches their
# chunks through the chunk table's document index rather than scanning it.
_PROJECT_DOCUMENTS = "project_documents AS MATERIALIZED (SELECT id FROM documents_document WHERE project_id = %(project)s)"

def _searchable_chunks_at_most(project: Project, limit: int) -> bool:
    """Whether the project holds at most `limit` searchable chunks, counted
    through the (document, status) index and never past `limit` + 1."""
    if limit <= 0:
        return False
    sql = f"""
        WITH {_PROJECT_DOCUMENTS}
        SELECT count(*) FROM (
            SELECT 1 FROM project_documents pd JOIN documents_chunk c ON c.document_id = pd.id
             WHERE c.status IN ('ready', 'corrupted')
             LIMIT %(limit)s
        ) AS bounded
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {"project": project.id, "limit": limit + 1})
        return cursor.fetchone()[0] <= limit


def _vector_params(project: Project, vector, k: int) -> tuple[int, dict]:
    dims = int(project.embedding_dimensions)
    return dims, {"q": vector_literal(vector), "model": project.embedding_model, "project": project.id, "k": k}


def semantic_exact(*, project: Project, vector, k: int) -> list[SearchHit]:
    """Every distance of the project's rows, computed: exact. Distances are
    scored in a materialized step the HNSW index cannot serve, and only the
    k best rows are read in full."""
    dims, params = _vector_params(project, vector, k)
    sql = f"""
        WITH {_PROJECT_DOCUMENTS}, scored AS MATERIALIZED (
            -- Document by document (LATERAL, kept apart by OFFSET 0): each
            -- document's chunks come through the chunk table's document
            -- index. Joined plainly, the planner cannot tell a small
            -- project's documents from large ones' and scans the table.
            SELECT c.id, c.embedding::vector({dims}) <=> %(q)s::vector({dims}) AS distance
              FROM project_documents pd CROSS JOIN LATERAL (
                   SELECT id, embedding FROM documents_chunk
                    WHERE document_id = pd.id AND status IN ('ready', 'corrupted')
                      AND embedding_model = %(model)s AND vector_dims(embedding) = {dims}
                   OFFSET 0
              ) AS c
        ), nearest AS (
            SELECT id, distance FROM scored ORDER BY distance, id LIMIT %(k)s
        )
        SELECT {_COLUMNS}, nearest.distance
          FROM nearest JOIN documents_chunk c ON c.id = nearest.id JOIN documents_document d ON d.id = c.document_id
         ORDER BY nearest.distance, c.id
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [_hit(row, 1.0 - float(row[6])) for row in rows]


def semantic_ann(*, project: Project, vector, k: int) -> list[SearchHit]:
    """Approximate nearest chunks through the model's partial HNSW index.
    Iterative index scans keep going until k rows of this project are found
    (a plain filtered HNSW scan can return fewer than k)."""
    dims, params = _vector_params(project, vector, k)
    sql = f"""
        WITH nearest AS MATERIALIZED (
            SELECT {_COLUMNS}, c.embedding::vector({dims}) <=> %(q)s::vector({dims}) AS distance
              FROM documents_chunk c JOIN documents_document d ON d.id = c.document_id
             WHERE c.embedding_model = %(model)s AND vector_dims(c.embedding) = {dims}
               AND d.project_id = %(project)s
               AND c.status IN ('ready', 'corrupted')
             ORDER BY c.embedding::vector({dims}) <=> %(q)s::vector({dims})
             LIMIT %(k)s
        )
        SELECT * FROM nearest ORDER BY distance, id
    """
    with transaction.atomic(), connection.cursor() as cursor:
        # set_config(..., true) lasts for this transaction only.
        cursor.execute(
            "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
            "set_config('hnsw.ef_search', %s, true)",
            [str(max(settings.MIRAGE_HNSW_EF_SEARCH, k))],
        )
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [_hit(row, 1.0 - float(row[6])) for row in rows]


def keyword(*, project: Project, query: str, k: int) -> list[SearchHit]:
    sql = f"""
        SELECT {_COLUMNS}, ts_rank_cd(c.search_vector, q) AS rank
          FROM documents_chunk c JOIN documents_document d ON d.id = c.document_id,
               websearch_to_tsquery('simple', %(query)s) q
         WHERE d.project_id = %(project)s AND c.search_vector @@ q
         ORDER BY rank DESC, c.id
         LIMIT %(k)s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {"query": query, "project": project.id, "k": k})
        rows = cursor.fetchall()
    return [_hit(row, float(row[6])) for row in rows]


def fuse(rankings: list[list[SearchHit]], k: int) -> list[SearchHit]:
    """Reciprocal rank fusion: score = sum over lists of 1 / (RRF_K + rank)."""
    scores: dict[int, float] = {}
    hits: dict[int, SearchHit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            hits.setdefault(hit.chunk_id, hit)
    ordered = sorted(scores, key=lambda chunk_id: (-scores[chunk_id], chunk_id))[:k]
    return [
        SearchHit(**{**hits[chunk_id].__dict__, "score": round(scores[chunk_id], 6)}) for chunk_id in ordered
    ]


def search(*, project: Project, query: str, k: int = 10, mode: str = "semantic") -> list[SearchHit]:
    from documents.services import project_embedder

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    k = max(1, min(MAX_K, int(k)))
    if mode == "keyword":
        return keyword(project=project, query=query, k=k)
    vector = project_embedder(project).embed_batch([query])[0].vector
    if mode == "semantic":
        return semantic(project=project, vector=vector, k=k)
    candidates = 4 * k
    return fuse(
        [semantic(project=project, vector=vector, k=candidates), keyword(project=project, query=query, k=candidates)],
        k,
    )
