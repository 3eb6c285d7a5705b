"""Windowed dispatch and broker priorities: a run keeps at most
MIRAGE_DISPATCH_WINDOW tasks in the broker, each finished task sends the
next, the run always ends, and a broken window is restarted by the
reconciler."""

import pytest
from celery.signals import before_task_publish
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from common import events as common_events
from documents import events, services
from documents.models import Chunk, Document
from jobs.models import Job
from tests.documents.test_reconcilers import indexing_document

pytestmark = [pytest.mark.unit, pytest.mark.django_db]


@pytest.fixture
def published():
    sent = []

    def record(sender=None, body=None, properties=None, **kwargs):
        sent.append((sender, list(body[0]), (properties or {}).get("priority")))

    before_task_publish.connect(record, weak=False)
    yield sent
    before_task_publish.disconnect(record)


def embed_tasks(published) -> list[tuple[int, int]]:
    return [(args[0], priority) for task, args, priority in published if task == "documents.embed_chunk"]


def test_a_run_sends_a_window_then_one_task_per_finished_chunk_and_always_finalises(published, settings):
    settings.MIRAGE_DISPATCH_WINDOW = 3
    document, job = indexing_document(["pending"] * 8)
    Job.objects.filter(id=job.id).update(priority="high")
    ids = list(Chunk.objects.filter(document=document).order_by("position").values_list("id", flat=True))

    services.dispatch_chord(
        chunk_ids=ids, document_id=document.id, generation=document.generation, chord_id="chord-1", priority="high"
    )
    assert embed_tasks(published) == [(chunk_id, 0) for chunk_id in ids[:3]]
    assert Chunk.objects.filter(id__in=ids[3:], dispatched_at__isnull=True).count() == 5

    # Each finished chunk sends the next waiting one; the last finalises
    # the document with no chord callback at all.
    for chunk_id in ids:
        assert services.chunk_embed(chunk_id=chunk_id).status == "ready"
    assert embed_tasks(published) == [(chunk_id, 0) for chunk_id in ids]
    assert Document.objects.get(id=document.id).status == "ready"
    assert Job.objects.get(id=job.id).status == "completed"


def test_a_larger_window_is_refilled_a_block_at_a_time_and_the_run_forgotten_once_final(
    published, settings, redis_client, django_capture_on_commit_callbacks
):
    settings.MIRAGE_DISPATCH_WINDOW = 8  # blocks of 2
    document, job = indexing_document(["pending"] * 13)
    ids = list(Chunk.objects.filter(document=document).order_by("position").values_list("id", flat=True))
    services.dispatch_chord(chunk_ids=ids, document_id=document.id, generation=document.generation, chord_id="c")
    assert [chunk_id for chunk_id, _ in embed_tasks(published)] == ids[:8]

    sent_after = []
    with django_capture_on_commit_callbacks(execute=True):
        for chunk_id in ids:
            assert services.chunk_embed(chunk_id=chunk_id).status == "ready"
            sent_after.append(len(embed_tasks(published)))
    # Every second finished chunk sends the next two waiting ones (the last
    # block is the one chunk left); never more than the window in flight.
    assert sent_after == [8, 10, 10, 12, 12, 13, 13, 13, 13, 13, 13, 13, 13]
    assert [chunk_id for chunk_id, _ in embed_tasks(published)] == ids
    assert Document.objects.get(id=document.id).status == "ready"
    assert Job.objects.get(id=job.id).status == "completed"
    # The run's dispatch marker, count and drained flag are gone with it;
    # its progress rank and its job's are kept only briefly (late events).
    generation = document.generation
    run_keys = [
        events._marker(document.id, generation),
        events._finished(document.id, generation),
        events._drained(document.id, generation),
    ]
    assert redis_client.exists(*run_keys) == 0
    for key in (f"document:{document.id}:{generation}", f"job:{job.id}"):
        assert 0 < redis_client.ttl(common_events.rank_key(key)) <= common_events.FINISHED_RANK_TTL_SECONDS
    # A task that finishes after its run was finalised counts nothing and
    # brings no key back; a last progress event (every chunk final)
    # published after the finish keeps its rank only briefly too.
    assert events.count_finished(document_id=document.id, generation=generation) is None
    assert redis_client.exists(*run_keys) == 0
    progress = common_events.rank_key(f"document:{document.id}:{generation}")
    redis_client.delete(progress)
    events.publish_document_progress(document_id=document.id, generation=generation, counts={"ready": 13})
    assert 0 < redis_client.ttl(progress) <= common_events.FINISHED_RANK_TTL_SECONDS


def test_a_window_whose_tasks_were_all_lost_is_restarted_by_the_reconciler(published, settings):
    settings.MIRAGE_DISPATCH_WINDOW = 2
    document, _ = indexing_document(["ready", "pending", "pending", "pending"])
    Chunk.objects.filter(document=document, status="pending").update(dispatched_at=None)
    # The run's dispatch marker is there: Redis did not lose the messages, the tasks died.
    events.mark_dispatched(document_id=document.id, generation=document.generation)

    report = services.chunks_redispatch_stuck()
    assert report["window_restarted"] == 2
    waiting = list(Chunk.objects.filter(document=document, status="pending").order_by("position"))
    # Nothing sent yet on commit in this test's transaction; the marks say what will be.
    assert [chunk.dispatched_at is not None for chunk in waiting] == [True, True, False]
    # In flight now: a second tick sends nothing more.
    assert services.chunks_redispatch_stuck()["window_restarted"] == 0


def test_priority_is_taken_on_upload_reindex_and_retry(client, django_user_model):
    from rest_framework.test import APIClient

    from tests.support.factories import make_project, markdown_document

    user = django_user_model.objects.create_user(username="prio", password="pw-for-tests-123")
    api = APIClient()
    api.force_authenticate(user)
    project = make_project(members=[user])
    response = api.post(
        f"/api/v1/projects/{project.id}/documents/",
        {"file": SimpleUploadedFile("urgent.md", markdown_document()), "priority": "high"},
        format="multipart",
    )
    assert response.status_code == 201 and response.json()["current_job"]["priority"] == "high"
    bad = api.post(
        f"/api/v1/projects/{project.id}/documents/",
        {"file": SimpleUploadedFile("x.md", markdown_document(4)), "priority": "urgent"},
        format="multipart",
    )
    assert bad.status_code == 400 and "priority" in bad.json()

    document = Document.objects.get(id=response.json()["id"])
    Job.objects.filter(id=document.current_job_id).update(status="cancelled")
    reindex = api.post(f"/api/v1/documents/{document.id}/reindex/", {"priority": "low"}, format="json")
    assert reindex.status_code == 202 and reindex.json()["priority"] == "low"
    Job.objects.filter(id=reindex.json()["id"]).update(status="cancelled")
    Chunk.objects.create(document=document, position=0, content="x", content_sha256="x", status="error")
    retry = api.post(f"/api/v1/documents/{document.id}/retry/", {"priority": "high"}, format="json")
    assert retry.status_code == 202 and retry.json()["priority"] == "high"


def test_the_next_waiting_chunk_is_read_from_the_waiting_index_and_the_document_checked_once(settings):
    # The statement once joined the document and the pauses to every pending
    # chunk of the document and sorted them all, once per finished chunk.
    from django.db import connection

    from documents.services.dispatch import _NEXT_SQL

    # A long run whose last few chunks still wait, with fresh statistics:
    # the plan the statement gets on a real document (on a handful of rows
    # any index is as cheap as another).
    document, _ = indexing_document(["pending"] * 400)
    chunks = Chunk.objects.filter(document=document)
    chunks.update(dispatched_at=timezone.now())
    chunks.filter(position__gte=395).update(dispatched_at=None)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_chunk")
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + _NEXT_SQL, {"document_id": document.id, "count": 16})
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "chunk_waiting_idx" in plan, plan
    assert "InitPlan" in plan and "One-Time Filter" in plan
    assert "Sort" not in plan
