"""The events a client receives, in order, for the lifecycles it follows:
one `document.status` per change of status, progress as
`document.progress` (monotonic, below 100 until the document is final),
`job.progress` never going backwards, and `document.deleted`."""

from __future__ import annotations

import pytest

from documents import services
from documents.models import Chunk, Document
from jobs.services import job_cancel
from tests.support.events import stream
from tests.support.factories import make_project, markdown_document, submit_bytes
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def of(events, kind: str, object_id: int) -> list[dict]:
    return [data for event, data in events if event == kind and data["id"] == object_id]


def wait_for_status(project_id: int, document_id: int, status: str) -> list[tuple[str, dict]]:
    return wait_until(
        lambda: (
            (events := stream(project_id))
            and [d["status"] for d in of(events, "document.status", document_id)][-1:] == [status]
            and events
        ),
        timeout=120,
        interval=0.2,
        message=f"document {document_id} {status} on the stream",
    )


def assert_monotonic_job_progress(events, job_id: int) -> None:
    rank = {"pending": 0, "running": 1, "completed": 2, "failed": 2, "cancelled": 2}
    keys = [(rank[job["status"]], job["progress_percentage"]) for job in of(events, "job.progress", job_id)]
    assert keys == sorted(keys), keys
    assert len(keys) == len(set(keys)), keys


def test_upload_to_ready_sends_each_status_once_and_progress_apart(worker):
    project = make_project()
    submission = submit_bytes(project, markdown_document(sections=40), "long.md")
    document, job = submission.document, submission.job
    events = wait_for_status(project.id, document.id, "ready")
    wait_until(
        lambda: of(stream(project.id), "job.progress", job.id)[-1]["status"] == "completed",
        timeout=60,
        message="job completed on the stream",
    )
    events = stream(project.id)

    assert [d["status"] for d in of(events, "document.status", document.id)] == ["pending", "indexing", "ready"]
    progress = of(events, "document.progress", document.id)
    assert progress, "no progress events"
    processed = [p["chunks_processed"] for p in progress]
    assert processed == sorted(processed) and len(set(processed)) == len(processed)
    assert all(p["progress_percentage"] < 100 for p in progress)
    assert {p["chunks_total"] for p in progress} == {Chunk.objects.filter(document=document).count()}
    assert_monotonic_job_progress(events, job.id)
    assert of(events, "job.progress", job.id)[-1]["progress_percentage"] == 100


def test_cancel_sends_cancelled_once(worker, settings):
    settings.MIRAGE_MAX_CONCURRENT_INDEXING_JOBS = 0  # stays pending: nothing races the cancel
    project = make_project()
    submission = submit_bytes(project, markdown_document(sections=3), "cancel.md")
    job_cancel(job_id=submission.job.id, actor="user:1", reason="not needed")
    events = wait_for_status(project.id, submission.document.id, "cancelled")
    assert [d["status"] for d in of(events, "document.status", submission.document.id)] == ["pending", "cancelled"]
    assert [j["status"] for j in of(events, "job.progress", submission.job.id)] == ["pending", "cancelled"]


def test_retry_sends_indexing_then_the_final_status(worker):
    project = make_project()
    submission = submit_bytes(project, markdown_document(sections=3), "retry.md")
    document = submission.document
    wait_for_status(project.id, document.id, "ready")
    Chunk.objects.filter(document=document, position=0).update(status="error", error="provider refused")
    Document.objects.filter(id=document.id).update(status="partial")
    retry_job = services.document_retry_failed(document=Document.objects.get(id=document.id), actor="user:1")
    wait_until(
        lambda: (
            of(stream(project.id), "document.status", document.id)[-1]["status"] == "ready"
            and len(of(stream(project.id), "document.status", document.id)) == 5
        ),
        timeout=120,
        message="retried document ready again",
    )
    events = stream(project.id)
    assert [d["status"] for d in of(events, "document.status", document.id)] == [
        "pending",
        "indexing",
        "ready",
        "indexing",
        "ready",
    ]
    assert_monotonic_job_progress(events, retry_job.id)


def test_delete_sends_document_deleted(worker):
    project = make_project()
    submission = submit_bytes(project, markdown_document(sections=2), "gone.md")
    wait_for_status(project.id, submission.document.id, "ready")
    services.document_delete(document=submission.document, actor="user:1")
    deleted = wait_until(
        lambda: of(stream(project.id), "document.deleted", submission.document.id),
        timeout=30,
        message="document.deleted on the stream",
    )
    assert deleted == [{"id": submission.document.id, "project_id": project.id, "filename": "gone.md"}]
