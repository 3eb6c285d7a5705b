"""Semantic search: exact for small projects, HNSW for large ones; either way
only the project's own embedded chunks."""

import math

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from documents import search, vectorindex
from documents.embeddings.hashing import HashEmbedder
from documents.models import Chunk, Document
from tests.support.factories import make_project

pytestmark = [pytest.mark.unit, pytest.mark.django_db]

TOPICS = ["rivers and fish", "mountain weather", "bread baking", "train timetables", "garden soil", "jazz chords"]


def add_chunks(project, texts, *, status="ready"):
    number = Document.objects.filter(project=project).count()
    document = Document.objects.create(
        project=project,
        filename=f"{project.name}-{number}.md",
        file=f"t/{project.name}-{number}.md",
        file_type="markdown",
        size_bytes=1,
        content_sha256=f"{project.id:032d}{number:032d}",
        status="ready",
    )
    embedder = HashEmbedder()
    chunks = []
    for position, text in enumerate(texts):
        vector = embedder.embed_batch([text])[0].vector if status in ("ready", "corrupted") else None
        chunks.append(
            Chunk(
                document=document,
                position=position,
                content=text,
                content_sha256=f"{position:064d}",
                status=status,
                embedding=vector,
                embedding_model=project.embedding_model,
            )
        )
    Chunk.objects.bulk_create(chunks)
    return document


def texts_for(project_tag: str, count: int) -> list[str]:
    return [f"{TOPICS[i % len(TOPICS)]} note {i} of {project_tag} " + " ".join(TOPICS[: i % 4]) for i in range(count)]


def query_vector(text: str):
    return HashEmbedder().embed_batch([text])[0].vector


def semantic_statements(project, text: str) -> list[str]:
    """The SQL that one semantic search sends."""
    with CaptureQueriesContext(connection) as captured:
        search.semantic(project=project, vector=query_vector(text), k=3)
    return [entry["sql"] for entry in captured.captured_queries]


def cosine(a, b) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (
        math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    )


def true_nearest(project, vector, k):
    scored = [
        (1 - cosine(vector, [float(x) for x in chunk.embedding]), chunk.id)
        for chunk in Chunk.objects.filter(document__project=project, status__in=["ready", "corrupted"])
    ]
    return [chunk_id for _, chunk_id in sorted(scored)[:k]]


@pytest.fixture
def two_projects():
    mine, theirs = make_project(), make_project()
    add_chunks(mine, texts_for("mine", 40))
    add_chunks(mine, ["pending text about rivers and fish"], status="pending")
    add_chunks(theirs, texts_for("theirs", 60))
    return mine, theirs


@pytest.mark.parametrize("exact_max", [5000, 0], ids=["exact", "hnsw"])
def test_finds_the_projects_own_nearest_chunks(two_projects, settings, exact_max):
    settings.MIRAGE_EXACT_SEARCH_MAX_CHUNKS = exact_max
    mine, _ = two_projects
    vector = query_vector("rivers and fish")

    hits = search.semantic(project=mine, vector=vector, k=5)

    truth = true_nearest(mine, vector, 5)
    if exact_max:
        assert [hit.chunk_id for hit in hits] == truth
    else:  # approximate, and float32 near-ties may swap the last place
        assert len({hit.chunk_id for hit in hits} & set(truth)) >= 4
    assert all(Chunk.objects.get(id=hit.chunk_id).document.project_id == mine.id for hit in hits)
    assert hits[0].score >= hits[-1].score


def test_a_small_project_is_searched_without_the_hnsw_index(two_projects, settings):
    settings.MIRAGE_EXACT_SEARCH_MAX_CHUNKS = 100
    mine, _ = two_projects
    query = next(sql for sql in semantic_statements(mine, "bread baking") if "<=>" in sql)
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + query)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert vectorindex.index_name(mine.embedding_model, 384) not in plan


def test_a_project_above_the_limit_goes_through_the_index(two_projects, settings):
    settings.MIRAGE_EXACT_SEARCH_MAX_CHUNKS = 39
    mine, _ = two_projects
    assert any("hnsw.iterative_scan" in sql for sql in semantic_statements(mine, "bread baking"))


def test_the_size_check_counts_searchable_chunks_only(two_projects):
    mine, theirs = two_projects
    assert search._searchable_chunks_at_most(mine, 40)
    assert not search._searchable_chunks_at_most(mine, 39)
    assert search._searchable_chunks_at_most(theirs, 60)
    assert not search._searchable_chunks_at_most(theirs, 0)
