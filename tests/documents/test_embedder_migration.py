"""Moving a project to another embedding model: the batches, the switch in
one transaction, cancel, new chunks embedded with both models, searches
that never mix models, and the reconciler's repairs. The services are
called directly (no worker); tests/e2e/test_embedder_migration.py runs the
whole migration under searches."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone

from common.models import AuditEntry, StatusChange
from documents import jobkinds, search, services
from documents.embeddings.hashing import HashEmbedder
from documents.models import Chunk, Document, Project
from documents.services import embedding
from jobs import services as job_services
from jobs.models import Job
from tests.support.factories import make_project

pytestmark = [pytest.mark.unit, pytest.mark.django_db]

NEXT = "tests.support.embedders.Hash256Embedder"
TEXTS = ["rivers and fish", "mountain weather report", "bread baking at home", "train timetables in winter"]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def add_document(project: Project, texts, *, status: str = "ready", chunk_status: str = "ready") -> Document:
    number = Document.objects.filter(project=project).count()
    document = Document.objects.create(
        project=project,
        filename=f"doc-{number}.md",
        file=f"t/{project.id}-{number}.md",
        file_type="markdown",
        size_bytes=1,
        content_sha256=sha(f"{project.id}-{number}"),
        status=status,
        parsing_finished_at=timezone.now(),
    )
    embedded = chunk_status in ("ready", "corrupted")
    Chunk.objects.bulk_create(
        Chunk(
            document=document,
            position=position,
            content=text,
            content_sha256=sha(text),
            status=chunk_status,
            embedding=HashEmbedder().embed_batch([text])[0].vector if embedded else None,
            embedding_model=project.embedding_model if embedded else "",
        )
        for position, text in enumerate(texts)
    )
    return document


def hash256(text: str) -> list[float]:
    return HashEmbedder(dimensions=256).embed_batch([text])[0].vector


def start(project: Project) -> Job:
    job = services.project_embedder_migrate(project=project, embedder=NEXT, actor="user:1")
    job_services.jobs_admit_pending()
    job.refresh_from_db()
    assert job.status == "running"
    return job


@pytest.fixture
def project():
    project = make_project(embedder="hash")
    add_document(project, TEXTS)
    return project


def test_starting_a_migration_creates_its_job_and_names_the_next_model(project):
    job = services.project_embedder_migrate(project=project, embedder=NEXT, actor="user:7")
    project.refresh_from_db()
    assert job.kind == jobkinds.MIGRATE_EMBEDDER and job.status == "pending"
    assert (project.embedding_model, project.next_embedding_model, project.next_embedding_dimensions) == (
        "hash-384",
        "hash-256",
        256,
    )
    assert project.embedder_job_id == job.id
    entry = AuditEntry.objects.get(project_id=project.id, action="embedder.migration_started")
    assert entry.actor == "user:7" and entry.details["to_model"] == "hash-256"


def test_a_second_migration_or_one_to_the_same_model_or_an_unknown_embedder_is_refused(project):
    with pytest.raises(services.EmbedderUnchanged, match="already uses hash-384"):
        services.project_embedder_migrate(project=project, embedder="hash")
    with pytest.raises(services.EmbedderRejected, match="unknown embedder"):
        services.project_embedder_migrate(project=project, embedder="no-such-model")
    job = services.project_embedder_migrate(project=project, embedder=NEXT)
    with pytest.raises(services.MigrationInProgress, match=f"job {job.id}"):
        services.project_embedder_migrate(project=project, embedder=NEXT)


def test_the_switch_waits_for_every_searchable_chunk_then_moves_all_of_them_at_once(project, settings):
    settings.MIRAGE_EMBEDDER_MIGRATION_BATCH_SIZE = 3
    failed = add_document(project, ["never embedded"], status="partial", chunk_status="error")
    job = start(project)

    assert services.embedder_migration_step(job_id=job.id).status == "continue"
    project.refresh_from_db()
    # Three of four chunks have their next vector; nothing switched, and the
    # chunks stay searchable with the old model.
    assert project.embedding_model == "hash-384"
    assert Chunk.objects.filter(next_embedding_model="hash-256").count() == 3
    assert set(Chunk.objects.filter(status="ready").values_list("embedding_model", flat=True)) == {"hash-384"}
    assert not services.embedder_migration_switch(job_id=job.id)
    assert [hit.content for hit in search.search(project=project, query="rivers and fish", k=1)] == ["rivers and fish"]

    assert services.embedder_migration_step(job_id=job.id).status == "continue"
    assert services.embedder_migration_step(job_id=job.id).status == "switched"

    project.refresh_from_db()
    assert (project.embedder, project.embedding_model, project.embedding_dimensions) == (NEXT, "hash-256", 256)
    assert (project.next_embedder, project.next_embedding_model, project.next_embedding_dimensions) == ("", "", None)
    for chunk in Chunk.objects.filter(document__project=project, status="ready"):
        assert chunk.embedding_model == "hash-256"
        assert list(chunk.embedding) == pytest.approx(hash256(chunk.content), abs=1e-6)
        assert chunk.next_embedding is None and chunk.next_embedding_model == ""
    # The old vectors are gone, the failed chunk's too (it would be embedded anew).
    assert Chunk.objects.get(document=failed).embedding is None
    job.refresh_from_db()
    assert (job.status, job.progress_percentage) == ("completed", 100)
    switched = AuditEntry.objects.get(project_id=project.id, action="embedder.switched")
    assert switched.details == {
        "job_id": job.id,
        "from_model": "hash-384",
        "to_model": "hash-256",
        "chunks": 4,
        "truncated": 0,
    }
    hits = search.search(project=project, query="rivers and fish", k=4)
    assert hits[0].content == "rivers and fish" and hits[0].score == pytest.approx(1.0)


def test_a_chunk_whose_text_is_already_cached_for_the_next_model_costs_no_provider_call(project, monkeypatch):
    from documents.models import EmbeddingCacheEntry

    for text in TEXTS:
        EmbeddingCacheEntry.objects.create(model_id="hash-256", text_sha256=sha(text), embedding=hash256(text))
    job = start(project)

    def refuse(texts):
        raise AssertionError(f"provider called for {texts}")

    from documents.embeddings import get_embedder

    monkeypatch.setattr(get_embedder(NEXT), "embed_batch", refuse)
    assert services.embedder_migration_step(job_id=job.id).status == "continue"
    assert services.embedder_migration_step(job_id=job.id).status == "switched"


def test_cancelling_keeps_the_old_model_and_drops_the_next_vectors(project, settings):
    settings.MIRAGE_EMBEDDER_MIGRATION_BATCH_SIZE = 2
    job = start(project)
    services.embedder_migration_step(job_id=job.id)
    assert Chunk.objects.exclude(next_embedding=None).count() == 2

    job_services.job_cancel(job_id=job.id, actor="user:1", reason="changed my mind")

    project.refresh_from_db()
    assert (project.embedding_model, project.next_embedder, project.next_embedding_model) == ("hash-384", "", "")
    assert not Chunk.objects.exclude(next_embedding=None).exists()
    assert not Chunk.objects.exclude(next_embedding_model="").exists()
    assert services.embedder_migration_step(job_id=job.id).status == "stopped"
    entry = AuditEntry.objects.get(project_id=project.id, action="embedder.migration_cancelled")
    assert entry.details["vectors_dropped"] == 2
    assert [hit.content for hit in search.search(project=project, query="bread baking at home", k=1)] == [
        "bread baking at home"
    ]
    # A new migration may start at once.
    services.project_embedder_migrate(project=project, embedder=NEXT)


def _indexing_chunk(project: Project, text: str) -> Chunk:
    document = add_document(project, [text], status="indexing", chunk_status="pending")
    return Chunk.objects.get(document=document)


def test_a_chunk_embedded_during_a_migration_gets_both_vectors(project):
    chunk = _indexing_chunk(project, "new upload about owls")
    start(project)

    assert services.chunk_embed(chunk_id=chunk.id).status == "ready"

    chunk.refresh_from_db()
    assert chunk.embedding_model == "hash-384"
    assert list(chunk.embedding) == pytest.approx(HashEmbedder().embed_batch([chunk.content])[0].vector, abs=1e-6)
    assert chunk.next_embedding_model == "hash-256"
    assert list(chunk.next_embedding) == pytest.approx(hash256(chunk.content), abs=1e-6)


def test_a_chunk_claimed_before_the_switch_and_stored_after_it_keeps_the_new_models_vector(project):
    chunk = _indexing_chunk(project, "new upload about owls")
    job = start(project)
    claim = services.chunk_claim(chunk_id=chunk.id)
    assert claim.next_embedding_model == "hash-256"
    services.embedder_migration_step(job_id=job.id)
    assert services.embedder_migration_switch(job_id=job.id)

    vector = HashEmbedder().embed_batch([chunk.content])[0].vector
    stored = services.chunk_mark_embedded(
        claim=claim,
        vector=vector,
        truncated=False,
        next=embedding.NextVector(hash256(chunk.content), truncated=False, fill_cache=True),
    )

    assert stored
    chunk.refresh_from_db()
    assert chunk.status == "ready" and chunk.embedding_model == "hash-256"
    assert list(chunk.embedding) == pytest.approx(hash256(chunk.content), abs=1e-6)
    assert chunk.next_embedding is None


def test_a_chunk_claimed_before_the_migration_and_stored_after_the_switch_is_not_stored(project):
    chunk = _indexing_chunk(project, "new upload about owls")
    claim = services.chunk_claim(chunk_id=chunk.id)
    job = start(project)
    services.embedder_migration_step(job_id=job.id)
    assert services.embedder_migration_switch(job_id=job.id)

    vector = HashEmbedder().embed_batch([chunk.content])[0].vector
    assert not services.chunk_mark_embedded(claim=claim, vector=vector, truncated=False)
    chunk.refresh_from_db()
    # Its lease runs out and the chunk reconciler sends it again, to the new model.
    assert chunk.status == "processing" and chunk.embedding is None


def test_a_chunk_stored_after_a_cancel_keeps_no_next_vector(project):
    chunk = _indexing_chunk(project, "new upload about owls")
    job = start(project)
    claim = services.chunk_claim(chunk_id=chunk.id)
    job_services.job_cancel(job_id=job.id)

    vector = HashEmbedder().embed_batch([chunk.content])[0].vector
    next_vector = embedding.NextVector(hash256(chunk.content), truncated=False, fill_cache=True)
    assert services.chunk_mark_embedded(claim=claim, vector=vector, truncated=False, next=next_vector)
    chunk.refresh_from_db()
    assert chunk.embedding_model == "hash-384" and chunk.next_embedding is None and chunk.next_embedding_model == ""


def test_a_search_that_began_before_the_switch_answers_with_the_new_model_only(project):
    job = start(project)
    services.embedder_migration_step(job_id=job.id)
    loaded_before = Project.objects.get(id=project.id)
    assert services.embedder_migration_switch(job_id=job.id)

    hits = search.search(project=loaded_before, query="mountain weather report", k=4)

    assert len(hits) == 4
    assert hits[0].content == "mountain weather report" and hits[0].score == pytest.approx(1.0)
    assert loaded_before.embedding_model == "hash-256"


def test_the_reconciler_sends_a_stalled_migration_again_then_fails_it(project, settings):
    settings.MIRAGE_MAX_DISPATCH_ATTEMPTS = 2
    job = start(project)
    services.embedder_migration_step(job_id=job.id)
    stale = timezone.now() - timedelta(seconds=settings.MIRAGE_CHUNK_LEASE_SECONDS + 1)

    for attempt in (1, 2):
        Job.objects.filter(id=job.id).update(updated_at=stale)
        assert services.embedder_migrations_repair() == {"resent": 1, "failed": 0, "cleared": 0}
        job.refresh_from_db()
        assert job.status == "running" and job.metadata["resends"] == attempt
    repair = StatusChange.objects.filter(entity="job", entity_id=job.id, from_status="running").last()
    assert repair.actor == "reconciler:repair_embedder_migrations" and "sent its batch task again" in repair.reason
    # Fresh progress: nothing to do.
    assert services.embedder_migrations_repair() == {"resent": 0, "failed": 0, "cleared": 0}

    Job.objects.filter(id=job.id).update(updated_at=stale)
    assert services.embedder_migrations_repair()["failed"] == 1
    job.refresh_from_db()
    project.refresh_from_db()
    assert job.status == "failed" and job.error_type == "dispatch_lost"
    assert (project.embedding_model, project.next_embedder) == ("hash-384", "")
    assert not Chunk.objects.exclude(next_embedding=None).exists()


def test_the_reconciler_clears_a_project_whose_migration_job_ended_without_it(project):
    job = start(project)
    services.embedder_migration_step(job_id=job.id)
    # The job ended by a path that did not clear the project (a bug, or a
    # deleted job row): the project must not stay half-migrated.
    job_services.job_transition(job_id=job.id, from_statuses="running", to="failed", actor="system")

    assert services.embedder_migrations_repair()["cleared"] == 1
    project.refresh_from_db()
    assert (project.next_embedder, project.next_embedding_model) == ("", "")
    assert not Chunk.objects.exclude(next_embedding=None).exists()
    assert services.embedder_migrations_repair()["cleared"] == 0


def test_a_long_migration_is_not_failed_by_the_job_timeout(project, settings):
    job = start(project)
    Job.objects.filter(id=job.id).update(started_at=timezone.now() - timedelta(days=2))
    assert job.id not in job_services.jobs_fail_timed_out()
    job.refresh_from_db()
    assert job.status == "running"


def test_a_migration_whose_provider_fails_for_good_fails_and_keeps_the_old_model(project, monkeypatch):
    from documents.embeddings import PermanentEmbeddingError, get_embedder

    job = start(project)

    def refuse(texts):
        raise PermanentEmbeddingError("the provider rejected the input (400)")

    monkeypatch.setattr(get_embedder(NEXT), "embed_batch", refuse)
    assert services.embedder_migration_step(job_id=job.id).status == "failed"
    job.refresh_from_db()
    project.refresh_from_db()
    assert job.status == "failed" and "rejected the input" in job.error_message
    assert (project.embedding_model, project.next_embedder) == ("hash-384", "")
    assert AuditEntry.objects.filter(project_id=project.id, action="embedder.migration_failed").exists()


def test_mirage_check_reports_a_stalled_or_orphaned_migration_and_a_chunk_of_another_model(project, settings):
    from documents import invariants

    job = start(project)
    long_ago = timezone.now() - timedelta(days=2)
    Job.objects.filter(id=job.id).update(started_at=long_ago, updated_at=long_ago)
    stray = Chunk.objects.filter(document__project=project).first()
    Chunk.objects.filter(id=stray.id).update(embedding_model="some-other-model")

    found = {(violation.kind, violation.object_id) for violation in invariants.find_violations()}

    assert ("migration_stalled", job.id) in found
    assert ("foreign_model", stray.id) in found
    # A migration has no running-time limit: its progress is what counts.
    assert ("timed_out", job.id) not in found

    job_services.job_transition(job_id=job.id, from_statuses="running", to="failed", actor="system")
    assert ("migration_orphaned", project.id) in {(v.kind, v.object_id) for v in invariants.find_violations()}
    assert invariants.repair()["embedder_migrations"]["cleared"] == 1
    assert ("migration_orphaned", project.id) not in {(v.kind, v.object_id) for v in invariants.find_violations()}
