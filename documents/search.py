"""Semantic (pgvector), keyword (PostgreSQL full text) and hybrid search
within one project, narrowed by filters, each hit a citation.

Filters (SearchFilters) apply to all three modes, inside the query that
ranks: a filter that leaves few chunks still gets the true top k (the
exact path when at most MIRAGE_EXACT_SEARCH_MAX_CHUNKS chunks pass it, an
iterative HNSW scan otherwise).

Keyword search ranks by any of the query's words, weighted by how rare each
is in the project (a chunk with every word comes first), keeps the
web-search syntax ("exact phrase", -exclusion), and matches text written
without spaces (Chinese, Japanese) through the overlapping character
bigrams the search vector holds for it (migration 0005): a run such as
异步处理 is searched as the phrase 异步 步处 处理.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction

from documents.models import Project
from documents.vectorindex import vector_literal

MODES = ("semantic", "keyword", "hybrid")
# Reciprocal rank fusion constant (Cormack et al.): damps the head of each list.
RRF_K = 60
MAX_K = 100
MAX_CONTEXT = 5
# Scripts written without spaces between words: searched by bigrams.
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
_CJK_RUN = re.compile(f"[{CJK}]+")
# An iterative HNSW scan gives up after this many index tuples; a
# selective filter on a large project needs more than pgvector's 20,000.
FILTERED_MAX_SCAN_TUPLES = 200_000
HIGHLIGHT_OPTIONS = "StartSel=<mark>, StopSel=</mark>, MaxFragments=2, MaxWords=24, MinWords=8, FragmentDelimiter= … "


@dataclass(frozen=True)
class SearchFilters:
    documents: tuple[int, ...] = ()
    file_type: str | None = None
    metadata: dict | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    # Leading levels of the heading path, whole levels.
    heading: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.documents
            or self.file_type
            or self.metadata
            or self.created_after
            or self.created_before
            or self.heading
        )

    def document_sql(self, alias: str = "d") -> tuple[str, dict]:
        clauses, params = [], {}
        if self.documents:
            clauses.append(f"{alias}.id = ANY(%(f_documents)s)")
            params["f_documents"] = list(self.documents)
        if self.file_type:
            clauses.append(f"{alias}.file_type = %(f_type)s")
            params["f_type"] = self.file_type
        if self.metadata:
            clauses.append(f"{alias}.metadata @> %(f_metadata)s::jsonb")
            params["f_metadata"] = json.dumps(self.metadata)
        if self.created_after:
            clauses.append(f"{alias}.created_at >= %(f_after)s")
            params["f_after"] = self.created_after
        if self.created_before:
            clauses.append(f"{alias}.created_at < %(f_before)s")
            params["f_before"] = self.created_before
        return "".join(f" AND {clause}" for clause in clauses), params

    def chunk_sql(self, alias: str = "c") -> tuple[str, dict]:
        if not self.heading:
            return "", {}
        # The path's first levels are these (jsonb array containment
        # ignores order, so the prefix is compared as a slice).
        return (
            f" AND jsonb_typeof({alias}.structure->'heading_path') = 'array'"
            f" AND jsonb_array_length({alias}.structure->'heading_path') >= %(f_heading_len)s"
            f" AND ARRAY(SELECT jsonb_array_elements_text({alias}.structure->'heading_path')"
            f" LIMIT %(f_heading_len)s) = %(f_heading)s::text[]",
            {"f_heading": list(self.heading), "f_heading_len": len(self.heading)},
        )


NO_FILTERS = SearchFilters()


@dataclass(frozen=True)
class SearchHit:
    chunk_id: int
    document_id: int
    filename: str
    position: int
    content: str
    structure: dict
    score: float
    start_offset: int | None = None
    end_offset: int | None = None
    highlights: list[str] = field(default_factory=list)
    context_before: list[dict] = field(default_factory=list)
    context_after: list[dict] = field(default_factory=list)


_COLUMNS = "c.id, c.document_id, d.filename, c.position, c.content, c.structure, c.start_offset, c.end_offset"
_SCORE = 8  # index of the score column after _COLUMNS


def _hit(row, score: float) -> SearchHit:
    chunk_id, document_id, filename, position, content, structure, start, end = row[:_SCORE]
    # Raw cursors hand jsonb back as text (Django decodes JSONField itself).
    if isinstance(structure, str):
        structure = json.loads(structure)
    return SearchHit(chunk_id, document_id, filename, position, content, structure, score, start, end)


def semantic(*, project: Project, vector, k: int, filters: SearchFilters = NO_FILTERS) -> list[SearchHit]:
    """Nearest chunks of the project by cosine distance. When few chunks
    pass (a small project, or a selective filter) every distance is
    computed; otherwise the model's HNSW index is walked."""
    if _searchable_chunks_at_most(project, settings.MIRAGE_EXACT_SEARCH_MAX_CHUNKS, filters):
        return semantic_exact(project=project, vector=vector, k=k, filters=filters)
    hits = semantic_ann(project=project, vector=vector, k=k, filters=filters)
    if len(hits) < k and filters:
        # The index walk gave up before finding k rows that pass (its scan
        # budget, or a graph region it could not reach): the rows that pass
        # are few, so computing every distance is affordable and exact.
        return semantic_exact(project=project, vector=vector, k=k, filters=filters)
    return hits


# The project's documents (those the filters let through), listed first so
# that the planner reaches their chunks through the chunk table's document
# index rather than scanning it.
def _project_documents(filters: SearchFilters) -> tuple[str, dict]:
    where, params = filters.document_sql("d")
    return (
        "project_documents AS MATERIALIZED "
        f"(SELECT d.id FROM documents_document d WHERE d.project_id = %(project)s{where})",
        params,
    )


def _searchable_chunks_at_most(project: Project, limit: int, filters: SearchFilters = NO_FILTERS) -> bool:
    """Whether at most `limit` searchable chunks of the project pass the
    filters, counted through the (document, status) index and never past
    `limit` + 1."""
    if limit <= 0:
        return False
    documents, params = _project_documents(filters)
    chunk_where, chunk_params = filters.chunk_sql("c")
    sql = f"""
        WITH {documents}
        SELECT count(*) FROM (
            SELECT 1 FROM project_documents pd JOIN documents_chunk c ON c.document_id = pd.id
             WHERE c.status IN ('ready', 'corrupted'){chunk_where}
             LIMIT %(limit)s
        ) AS bounded
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, {"project": project.id, "limit": limit + 1, **params, **chunk_params})
        return cursor.fetchone()[0] <= limit


def _vector_params(project: Project, vector, k: int) -> tuple[int, dict]:
    dims = int(project.embedding_dimensions)
    return dims, {"q": vector_literal(vector), "model": project.embedding_model, "project": project.id, "k": k}


def semantic_exact(*, project: Project, vector, k: int, filters: SearchFilters = NO_FILTERS) -> list[SearchHit]:
    """Every distance of the project's rows (those passing the filters),
    computed: exact. Distances are scored in a materialized step the HNSW
    index cannot serve, and only the k best rows are read in full."""
    dims, params = _vector_params(project, vector, k)
    documents, document_params = _project_documents(filters)
    chunk_where, chunk_params = filters.chunk_sql("c")
    sql = f"""
        WITH {documents}, scored AS MATERIALIZED (
            -- Document by document (LATERAL, kept apart by OFFSET 0): each
            -- document's chunks come through the chunk table's document
            -- index. Joined plainly, the planner cannot tell a small
            -- project's documents from large ones' and scans the table.
            SELECT c.id, c.embedding::vector({dims}) <=> %(q)s::vector({dims}) AS distance
              FROM project_documents pd CROSS JOIN LATERAL (
                   SELECT c.id, c.embedding FROM documents_chunk c
                    WHERE c.document_id = pd.id AND c.status IN ('ready', 'corrupted')
                      AND c.embedding_model = %(model)s AND vector_dims(c.embedding) = {dims}{chunk_where}
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
        cursor.execute(sql, {**params, **document_params, **chunk_params})
        rows = cursor.fetchall()
    return [_hit(row, 1.0 - float(row[_SCORE])) for row in rows]


def semantic_ann(*, project: Project, vector, k: int, filters: SearchFilters = NO_FILTERS) -> list[SearchHit]:
    """Approximate nearest chunks through the model's partial HNSW index.
    Iterative index scans keep going until k rows of this project (that
    pass the filters) are found; a plain filtered HNSW scan can return
    fewer than k."""
    dims, params = _vector_params(project, vector, k)
    document_where, document_params = filters.document_sql("d")
    chunk_where, chunk_params = filters.chunk_sql("c")
    sql = f"""
        WITH nearest AS MATERIALIZED (
            SELECT {_COLUMNS}, c.embedding::vector({dims}) <=> %(q)s::vector({dims}) AS distance
              FROM documents_chunk c JOIN documents_document d ON d.id = c.document_id
             WHERE c.embedding_model = %(model)s AND vector_dims(c.embedding) = {dims}
               AND d.project_id = %(project)s{document_where}
               AND c.status IN ('ready', 'corrupted'){chunk_where}
             ORDER BY c.embedding::vector({dims}) <=> %(q)s::vector({dims})
             LIMIT %(k)s
        )
        SELECT * FROM nearest ORDER BY distance, id
    """
    with transaction.atomic(), connection.cursor() as cursor:
        # set_config(..., true) lasts for this transaction only.
        cursor.execute(
            "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
            "set_config('hnsw.ef_search', %s, true), set_config('hnsw.max_scan_tuples', %s, true)",
            [str(max(settings.MIRAGE_HNSW_EF_SEARCH, k)), str(FILTERED_MAX_SCAN_TUPLES if filters else 20_000)],
        )
        cursor.execute(sql, {**params, **document_params, **chunk_params})
        rows = cursor.fetchall()
    return [_hit(row, 1.0 - float(row[_SCORE])) for row in rows]


# --- Keyword ------------------------------------------------------------------------


@dataclass(frozen=True)
class KeywordQuery:
    """A query in web-search syntax, taken apart: the terms any of which a
    hit must match (words, or phrases in quotes), and the excluded ones
    (-word, -"phrase"); each as web-search text for websearch_to_tsquery."""

    terms: tuple[str, ...]
    excluded: tuple[str, ...]


_TOKEN = re.compile(r'(-?)"([^"]*)"?|(\S+)')


def _bigrams(run: str) -> str:
    if len(run) == 1:
        return run
    return " ".join(run[index : index + 2] for index in range(len(run) - 1))


def _as_phrase(text: str) -> str:
    """Web-search text for a phrase: runs of CJK become their bigrams (how
    the search vector holds them), all of it in quotes."""
    words = " ".join(_CJK_RUN.sub(lambda match: f" {_bigrams(match.group())} ", text).replace('"', " ").split())
    return f'"{words}"' if words else ""


def _as_terms(text: str) -> list[str]:
    """An unquoted word: itself, or, where it holds text without spaces,
    its other words and each bigram of that text as terms of their own (so
    that 处理请求 finds 处理很多请求, ranked below an exact run)."""
    if not _CJK_RUN.search(text):
        return [text.replace('"', " ").strip()]
    terms = []
    for part in re.split(f"([{CJK}]+)", text):
        if _CJK_RUN.fullmatch(part):
            terms.extend(_bigrams(part).split())
        elif part.strip():
            terms.append(part.replace('"', " ").strip())
    return terms


def parse_keyword_query(query: str) -> KeywordQuery:
    terms: list[str] = []
    excluded: list[str] = []
    for match in _TOKEN.finditer(query):
        negated, quoted, bare = match.group(1), match.group(2), match.group(3)
        if quoted is not None:
            found = [_as_phrase(quoted)]
        else:
            if bare.lower() == "or":
                continue  # any word matches already
            negated = bare.startswith("-") and len(bare) > 1
            if negated:
                bare = bare[1:]
            found = [_as_phrase(bare)] if negated else _as_terms(bare)
        target = excluded if negated else terms
        for term in found:
            # Punctuation alone has no lexeme and would match nothing.
            if term and re.search(r"\w", term) and term not in target:
                target.append(term)
    return KeywordQuery(tuple(terms), tuple(excluded))


def _tsquery_any(name: str, count: int) -> str:
    return " || ".join(f"websearch_to_tsquery('simple', (%({name})s::text[])[{index + 1}])" for index in range(count))


def keyword(*, project: Project, query: str, k: int, filters: SearchFilters = NO_FILTERS) -> list[SearchHit]:
    """Chunks matching any of the query's terms and none of its excluded
    ones, ranked by the summed weight of the terms they match (a term's
    weight is its inverse document frequency in the project, so rare words
    count most and a chunk with every word ranks first), then by
    ts_rank_cd. Scores are in [0, 1): the share of the query's weight
    matched."""
    parsed = parse_keyword_query(query)
    if not parsed.terms:
        return []
    documents, document_params = _project_documents(filters)
    chunk_where, chunk_params = filters.chunk_sql("c")
    params = {
        "project": project.id,
        "k": k,
        "terms": list(parsed.terms),
        "excluded": list(parsed.excluded),
        **document_params,
        **chunk_params,
    }
    matches = _tsquery_any("terms", len(parsed.terms))
    exclusion = ""
    if parsed.excluded:
        exclusion = f" AND NOT c.search_vector @@ ({_tsquery_any('excluded', len(parsed.excluded))})"
    weights = _term_weights(project, parsed, documents, params)
    params["weights"] = weights
    sql = f"""
        WITH {documents}, candidates AS MATERIALIZED (
            SELECT c.id, c.search_vector
              FROM project_documents pd JOIN documents_chunk c ON c.document_id = pd.id
             WHERE c.search_vector @@ ({matches}){exclusion}{chunk_where}
        ), ranked AS (
            SELECT cand.id,
                   (SELECT coalesce(sum(w.weight), 0) FROM unnest(%(terms)s::text[], %(weights)s::float8[])
                                                         AS w(term, weight)
                     WHERE cand.search_vector @@ websearch_to_tsquery('simple', w.term)) AS matched,
                   ts_rank_cd(cand.search_vector, ({matches}), 32) AS density
              FROM candidates cand
        ), best AS (
            SELECT id, matched, density FROM ranked ORDER BY matched DESC, density DESC, id LIMIT %(k)s
        )
        SELECT {_COLUMNS}, best.matched, best.density,
               ts_headline('simple', c.content, ({matches}), %(highlight)s)
          FROM best JOIN documents_chunk c ON c.id = best.id JOIN documents_document d ON d.id = c.document_id
         ORDER BY best.matched DESC, best.density DESC, c.id
    """
    params["highlight"] = HIGHLIGHT_OPTIONS
    total = sum(weights) or 1.0
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    hits = []
    for row in rows:
        matched, density, headline = float(row[_SCORE]), float(row[_SCORE + 1]), row[_SCORE + 2]
        # Weight matched first; density only breaks near-ties (stays below 1).
        score = min(0.999999, matched / total * 0.99 + density * 0.01)
        hit = _hit(row, round(score, 6))
        hits.append(SearchHit(**{**hit.__dict__, "highlights": _highlights(headline, hit.content, parsed)}))
    return hits


def _term_weights(project: Project, parsed: KeywordQuery, documents: str, params: dict) -> list[float]:
    """Inverse document frequency of each term among the project's chunks
    (BM25's form, always positive)."""
    sql = f"""
        WITH {documents}, searchable AS MATERIALIZED (
            SELECT c.search_vector FROM project_documents pd JOIN documents_chunk c ON c.document_id = pd.id
        )
        SELECT (SELECT count(*) FROM searchable),
               ARRAY(SELECT (SELECT count(*) FROM searchable s
                              WHERE s.search_vector @@ websearch_to_tsquery('simple', t.term))
                       FROM unnest(%(terms)s::text[]) WITH ORDINALITY AS t(term, n) ORDER BY t.n)
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        total, frequencies = cursor.fetchone()
    return [math.log(1 + (total - df + 0.5) / (df + 0.5)) for df in frequencies]


def _highlights(headline: str, content: str, parsed: KeywordQuery) -> list[str]:
    """ts_headline's fragments; for text without spaces, whose bigrams
    ts_headline cannot mark inside the run, the matched runs are marked
    here."""
    if "<mark>" in headline:
        return [fragment.strip() for fragment in headline.split(" … ") if fragment.strip()]
    runs = [run for term in parsed.terms for run in _CJK_RUN.findall(_unbigram(term))]
    for run in sorted(set(runs), key=len, reverse=True):
        index = content.find(run)
        if index >= 0:
            start, end = max(0, index - 40), min(len(content), index + len(run) + 40)
            return [content[start:index] + "<mark>" + run + "</mark>" + content[index + len(run) : end]]
    return [headline] if headline else []


def _unbigram(term: str) -> str:
    """The CJK text a bigram phrase stands for (`"异步 步处 处理"` -> 异步处理)."""
    words = term.strip('"').split()
    if words and all(_CJK_RUN.fullmatch(word) and len(word) == 2 for word in words):
        return words[0] + "".join(word[1] for word in words[1:])
    return term


# --- Fusion, context, entry point ------------------------------------------------------


def fuse(rankings: list[list[SearchHit]], k: int) -> list[SearchHit]:
    """Reciprocal rank fusion: score = sum over lists of 1 / (RRF_K + rank)."""
    scores: dict[int, float] = {}
    hits: dict[int, SearchHit] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (RRF_K + rank)
            # The keyword list's copy carries highlights.
            if hit.chunk_id not in hits or (hit.highlights and not hits[hit.chunk_id].highlights):
                hits[hit.chunk_id] = hit
    ordered = sorted(scores, key=lambda chunk_id: (-scores[chunk_id], chunk_id))[:k]
    return [SearchHit(**{**hits[chunk_id].__dict__, "score": round(scores[chunk_id], 6)}) for chunk_id in ordered]


def with_context(hits: list[SearchHit], context: int) -> list[SearchHit]:
    """Each hit with the text of up to `context` chunks on each side (by
    position in its document), in one query."""
    if not hits or context <= 0:
        return hits
    sql = """
        SELECT h.chunk_id, n.position, n.content, n.start_offset, n.end_offset
          FROM unnest(%(ids)s::bigint[], %(documents)s::bigint[], %(positions)s::int[])
               AS h(chunk_id, document_id, position)
          JOIN documents_chunk n ON n.document_id = h.document_id
                                AND n.position BETWEEN h.position - %(n)s AND h.position + %(n)s
                                AND n.position <> h.position
         ORDER BY h.chunk_id, n.position
    """
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            {
                "ids": [hit.chunk_id for hit in hits],
                "documents": [hit.document_id for hit in hits],
                "positions": [hit.position for hit in hits],
                "n": context,
            },
        )
        rows = cursor.fetchall()
    around: dict[int, list] = {}
    for chunk_id, position, content, start, end in rows:
        around.setdefault(chunk_id, []).append(
            {"position": position, "content": content, "start_offset": start, "end_offset": end}
        )
    result = []
    for hit in hits:
        neighbours = around.get(hit.chunk_id, [])
        result.append(
            SearchHit(
                **{
                    **hit.__dict__,
                    "context_before": [n for n in neighbours if n["position"] < hit.position],
                    "context_after": [n for n in neighbours if n["position"] > hit.position],
                }
            )
        )
    return result


def search(
    *,
    project: Project,
    query: str,
    k: int = 10,
    mode: str = "semantic",
    filters: SearchFilters = NO_FILTERS,
    context: int = 0,
) -> list[SearchHit]:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    k = max(1, min(MAX_K, int(k)))
    context = max(0, min(MAX_CONTEXT, int(context)))
    if mode == "keyword":
        return with_context(keyword(project=project, query=query, k=k, filters=filters), context)
    return with_context(_vector_search(project=project, query=query, k=k, mode=mode, filters=filters), context)


# A migration to another model can switch the project between two searches
# at most this often (it takes a whole migration job each time).
_SWITCHES_FOLLOWED = 3


def _vector_search(*, project: Project, query: str, k: int, mode: str, filters: SearchFilters) -> list[SearchHit]:
    """Semantic or hybrid hits, all of them scored by one model: the query
    is embedded with the project's model and only that model's vectors are
    read. If the project switched to another model meanwhile
    (services.embedders: the switch is one transaction), the search is
    run again with the new one: a search that still finds its model pinned
    afterwards read the chunks as they were before any switch."""
    from documents.services import project_embedder

    for _ in range(_SWITCHES_FOLLOWED):
        model = project.embedding_model
        vector = project_embedder(project).embed_batch([query])[0].vector
        if mode == "semantic":
            hits = semantic(project=project, vector=vector, k=k, filters=filters)
        else:
            candidates = 4 * k
            hits = fuse(
                [
                    semantic(project=project, vector=vector, k=candidates, filters=filters),
                    keyword(project=project, query=query, k=candidates, filters=filters),
                ],
                k,
            )
        if Project.objects.filter(id=project.id, embedding_model=model).exists():
            return hits
        project.refresh_from_db(fields=["embedder", "embedding_model", "embedding_dimensions"])
    return hits
