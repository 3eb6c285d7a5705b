"""A project moves to another embedding model while a client searches it
every 100 ms: no search fails, every answer is the old model's ranking or
the new model's (never a mix), and the switch is in the project's history.

Two runs of the same check: `hash` to `hash-256` (a second hash model,
seconds), with an upload during the migration; and `hash` to `local` on
1,000 chunks, the issue's case, marked slow (the local model on a shared
2-core machine takes about a minute for them)."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.utils import timezone

from common.models import StatusChange
from documents import services
from documents.embeddings.hashing import HashEmbedder
from documents.models import Chunk, Document, Project
from jobs.models import Job
from tests.api.conftest import client_for
from tests.support.factories import make_project, make_user, markdown_document
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

TOPICS = ["river fish", "mountain weather", "bread baking", "train timetable", "garden soil", "jazz chords"]
QUERIES = ["river fish 3", "bread baking weather", "jazz chords in the garden", "train 12"]
SEARCH_EVERY_SECONDS = 0.1


def short_texts(count: int) -> list[str]:
    return [f"{TOPICS[i % len(TOPICS)]} {i} {TOPICS[(i * 7) % len(TOPICS)]}" for i in range(count)]


def project_with_chunks(owner, count: int) -> Project:
    """A `hash` project holding one ready document of `count` short chunks,
    stored directly (the pipeline is not what this test is about)."""
    project = make_project(owner=owner)
    document = Document.objects.create(
        project=project,
        filename="notes.md",
        file="t/notes.md",
        file_type="markdown",
        size_bytes=1,
        content_sha256=hashlib.sha256(f"notes-{project.id}".encode()).hexdigest(),
        status="ready",
        parsing_finished_at=timezone.now(),
        indexed_at=timezone.now(),
    )
    texts = short_texts(count)
    vectors = HashEmbedder().embed_batch(texts)
    Chunk.objects.bulk_create(
        Chunk(
            document=document,
            position=position,
            content=text,
            content_sha256=hashlib.sha256(text.encode()).hexdigest(),
            status="ready",
            embedding=vector.vector,
            embedding_model="hash-384",
        )
        for position, (text, vector) in enumerate(zip(texts, vectors, strict=True))
    )
    return project


def ranking(response) -> list[tuple[int, float]]:
    return [(hit["chunk_id"], hit["score"]) for hit in response.json()]


@dataclass
class Searcher:
    """Searches the project every 100 ms on a thread of its own, with its
    own API client and database connection, recording every answer."""

    user: object
    project_id: int
    answers: list = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        client = client_for(self.user)
        try:
            number = 0
            while not self.stop.is_set():
                query = QUERIES[number % len(QUERIES)]
                response = client.get(f"/api/v1/projects/{self.project_id}/search/", {"q": query, "k": 5})
                body = ranking(response) if response.status_code == 200 else response.content
                self.answers.append((time.monotonic(), query, response.status_code, body))
                number += 1
                self.stop.wait(SEARCH_EVERY_SECONDS)
        finally:
            connection.close()

    def __enter__(self) -> Searcher:
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def migrate_under_searches(*, owner, project: Project, embedder: str, during=None, timeout: float) -> dict:
    """Start the migration through the API with a searcher running; return
    the job, the answers, and each query's ranking before and after."""
    api = client_for(owner)
    search = f"/api/v1/projects/{project.id}/search/"
    before = {query: ranking(api.get(search, {"q": query, "k": 5})) for query in QUERIES}
    chunks_before = Chunk.objects.filter(document__project=project).count()
    with Searcher(owner, project.id) as searcher:
        wait_until(lambda: len(searcher.answers) >= len(QUERIES), timeout=60, message="searches before the migration")
        if "." in embedder:
            # A dotted path is an operator's choice, never a request's: the
            # service starts it, as `ingest` or the admin would.
            job_id = services.project_embedder_migrate(project=project, embedder=embedder, actor="system").id
        else:
            started = api.post(f"/api/v1/projects/{project.id}/embedder/", {"embedder": embedder}, format="json")
            assert started.status_code == 202, started.content
            job_id = started.json()["id"]
        if during is not None:
            during(api)
        job = wait_until(
            lambda: Job.objects.filter(id=job_id).exclude(status__in=Job.ACTIVE_STATUSES).first(),
            timeout=timeout,
            message="the migration job finished",
        )
        switched_at = len(searcher.answers)
        wait_until(lambda: len(searcher.answers) >= switched_at + len(QUERIES), timeout=60, message="searches after")
    after = {query: ranking(api.get(search, {"q": query, "k": 5})) for query in QUERIES}
    return {
        "api": api,
        "job": job,
        "answers": searcher.answers,
        "before": before,
        "after": after,
        "chunks_before": chunks_before,
    }


def assert_never_mixed(run: dict) -> None:
    assert run["job"].status == "completed", (run["job"].status, run["job"].error_message)
    answers = run["answers"]
    failed = [answer for answer in answers if answer[2] != 200]
    assert failed == []
    assert all(run["before"][query] != run["after"][query] for query in QUERIES)
    served = []
    for _, query, _, hits in answers:
        assert len(hits) == 5
        if hits == run["before"][query]:
            served.append("old")
        elif hits == run["after"][query]:
            served.append("new")
        else:
            raise AssertionError(f"{query!r} answered by neither model alone: {hits}")
    # The old model served until the switch and the new one from then on.
    assert served[0] == "old" and served[-1] == "new"
    assert served == sorted(served, key=lambda model: model == "new")


def assert_switch_in_history(run: dict, project: Project, *, from_model: str, to_model: str) -> None:
    api, job = run["api"], run["job"]
    audit = api.get(f"/api/v1/projects/{project.id}/audit/").json()["results"]
    actions = [entry["action"] for entry in audit if entry["action"].startswith("embedder.")]
    assert actions == ["embedder.migration_started", "embedder.switched"]
    switched = next(entry for entry in audit if entry["action"] == "embedder.switched")
    assert (switched["details"]["from_model"], switched["details"]["to_model"]) == (from_model, to_model)
    assert switched["actor"] == "worker" and switched["details"]["job_id"] == job.id
    # Every chunk that was searchable at the switch moved with it (an
    # upload's chunks still pending then were embedded with the new model).
    assert switched["details"]["chunks"] >= run["chunks_before"]
    history = api.get(f"/api/v1/jobs/{job.id}/history/").json()["results"]
    assert [(entry["from_status"], entry["to_status"]) for entry in history] == [
        ("", "pending"),
        ("pending", "running"),
        ("running", "completed"),
    ]
    state = api.get(f"/api/v1/projects/{project.id}/embedder/").json()
    assert (state["embedding_model"], state["migration"]) == (to_model, None)
    assert set(Chunk.objects.filter(document__project=project).values_list("embedding_model", flat=True)) == {to_model}
    assert not Chunk.objects.filter(document__project=project).exclude(next_embedding=None).exists()


def test_a_migration_between_two_hash_models_never_fails_or_mixes_a_search(worker, settings, monkeypatch):
    settings.MIRAGE_EMBEDDER_MIGRATION_BATCH_SIZE = 20
    # Each batch takes 0.1 s: the migration lasts over a dozen searches.
    monkeypatch.setenv("MIRAGE_TEST_EMBED_DELAY", "0.1")
    owner = make_user()
    project = project_with_chunks(owner, 300)
    uploaded = {}

    def upload_during(api):
        response = api.post(
            f"/api/v1/projects/{project.id}/documents/",
            {"file": SimpleUploadedFile("rivers.md", markdown_document(sections=2))},
            format="multipart",
        )
        assert response.status_code == 201, response.content
        uploaded["id"] = response.json()["id"]

    run = migrate_under_searches(
        owner=owner,
        project=project,
        embedder="tests.support.embedders.Hash256Embedder",
        during=upload_during,
        timeout=120,
    )

    assert_never_mixed(run)
    upload = wait_until(
        lambda: Document.objects.filter(id=uploaded["id"], status="ready").first(),
        timeout=60,
        message="the upload made during the migration is ready",
    )
    assert_switch_in_history(run, project, from_model="hash-384", to_model="hash-256")
    hits = run["api"].get(f"/api/v1/projects/{project.id}/search/", {"q": "River section 1 currents"}).json()
    assert hits and hits[0]["document_id"] == upload.id


@pytest.mark.slow
def test_a_migration_from_hash_to_local_on_1000_chunks_never_fails_or_mixes_a_search(worker):
    owner = make_user()
    project = project_with_chunks(owner, 1000)

    run = migrate_under_searches(owner=owner, project=project, embedder="local", timeout=900)

    assert_never_mixed(run)
    assert_switch_in_history(run, project, from_model="hash-384", to_model="sentence-transformers/all-MiniLM-L6-v2")


def test_a_migration_whose_next_batch_task_was_lost_is_sent_again_by_the_reconciler(worker, settings, monkeypatch):
    """The chain of batch tasks breaks (a worker died after storing a batch,
    before its next task reached Redis): the job is not left `running`
    forever; the reconciler sends the batch again once its progress has been
    still for a lease, and the migration ends with its switch."""
    settings.MIRAGE_EMBEDDER_MIGRATION_BATCH_SIZE = 20
    project = project_with_chunks(make_user(), 60)
    send = services.dispatch_migration_step
    lost = threading.Event()

    def lose_the_second_batch(*, job_id, countdown=None):
        if not lost.is_set() and Chunk.objects.filter(next_embedding_model="hash-256").exists():
            lost.set()
            return
        send(job_id=job_id, countdown=countdown)

    monkeypatch.setattr(services, "dispatch_migration_step", lose_the_second_batch)
    job = services.project_embedder_migrate(
        project=project, embedder="tests.support.embedders.Hash256Embedder", actor="system"
    )
    wait_until(lost.is_set, timeout=60, message="the first batch stored and its successor lost")
    assert Job.objects.get(id=job.id).status == "running"

    # What beat does every interval: nothing until the job's progress has
    # been still for MIRAGE_CHUNK_LEASE_SECONDS, then one re-send.
    wait_until(lambda: services.embedder_migrations_repair()["resent"], timeout=60, interval=0.5)
    job = wait_until(lambda: Job.objects.filter(id=job.id, status="completed").first(), timeout=60, message="switched")

    project.refresh_from_db()
    assert project.embedding_model == "hash-256"
    repairs = StatusChange.objects.filter(entity="job", entity_id=job.id, actor="reconciler:repair_embedder_migrations")
    assert [(row.from_status, row.to_status) for row in repairs] == [("running", "running")]
