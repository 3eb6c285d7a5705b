"""One partial HNSW index per embedding model.

The `embedding` column is untyped so projects can pin models of different
dimensions; HNSW needs a typed expression, so each model gets an index on
`embedding::vector(N)` restricted to its own rows (model id and dimension
count, since one model may serve several dimensions), and searches use the
same cast and predicate so the planner can pick it.
"""

from __future__ import annotations

import hashlib

from django.db import connection

# Models the migrations index up front.
BUILTIN_MODELS = {"hash-384": 384, "sentence-transformers/all-MiniLM-L6-v2": 384}


def vector_literal(vector) -> str:
    """pgvector's text form of a vector, for raw SQL (`%s::vector`)."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def index_name(model_id: str, dimensions: int) -> str:
    digest = hashlib.sha1(model_id.encode("utf-8")).hexdigest()[:12]
    return f"chunk_hnsw_{digest}_{int(dimensions)}"


def create_index_statement(model_id: str, dimensions: int, *, concurrently: bool = False) -> str:
    # The model id must be a literal in the predicate (a parameter would make
    # the index unusable); standard_conforming_strings makes doubling quotes
    # the complete escape.
    literal = "'" + model_id.replace("'", "''") + "'"
    how = "CONCURRENTLY " if concurrently else ""
    return (
        f"CREATE INDEX {how}IF NOT EXISTS {index_name(model_id, dimensions)} ON documents_chunk "
        f"USING hnsw ((embedding::vector({int(dimensions)})) vector_cosine_ops) "
        f"WHERE embedding_model = {literal} AND vector_dims(embedding) = {int(dimensions)}"
    )


def ensure_index(*, model_id: str, dimensions: int) -> None:
    # Outside a transaction the index can be built without blocking writes.
    statement = create_index_statement(model_id, dimensions, concurrently=not connection.in_atomic_block)
    with connection.cursor() as cursor:
        cursor.execute(statement)
