"""History and audit through the API: what happened to a document or a job,
who did it and why, oldest first; and what was done to a project's data."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from common import history
from documents import services
from documents.models import Chunk, Document
from jobs import services as job_services
from tests.support.factories import markdown_document, submit_bytes

pytestmark = [pytest.mark.unit, pytest.mark.django_db]


def entries(response) -> list[tuple]:
    assert response.status_code == 200, response.content
    return [(entry["from_status"], entry["to_status"], entry["actor"]) for entry in response.json()["results"]]


def test_document_history_lists_each_change_oldest_first_with_actor_and_reason(api, user, project):
    submission = submit_bytes(project, markdown_document(), "notes.md")
    document, job = submission.document, submission.job
    Document.objects.filter(id=document.id).update(current_job=job)
    job_services.job_cancel(job_id=job.id, actor=history.user_actor(user), reason="wrong file")

    response = api.get(f"/api/v1/documents/{document.id}/history/")
    assert entries(response) == [("", "pending", "system"), ("pending", "cancelled", f"user:{user.id}")]
    last = response.json()["results"][-1]
    assert last["reason"] == "wrong file"
    assert last["job"] == job.id
    assert set(last) == {"from_status", "to_status", "actor", "reason", "job", "at"}


def test_job_history_follows_the_job_from_creation_to_its_end(api, user, project):
    job = submit_bytes(project, markdown_document(), "notes.md").job
    job_services.job_cancel(job_id=job.id, actor=history.user_actor(user), reason="not needed")
    statuses = [(source, to) for source, to, _ in entries(api.get(f"/api/v1/jobs/{job.id}/history/"))]
    assert statuses[0] == ("", "pending")
    assert statuses[-1][1] == "cancelled"


def test_upload_through_the_api_names_the_user_and_deletion_is_audited_after_the_document_is_gone(api, user, project):
    upload = api.post(
        f"/api/v1/projects/{project.id}/documents/",
        {"file": SimpleUploadedFile("report.md", markdown_document())},
        format="multipart",
    )
    assert upload.status_code == 201, upload.content
    document_id = upload.json()["id"]
    assert entries(api.get(f"/api/v1/documents/{document_id}/history/"))[0] == ("", "pending", f"user:{user.id}")

    assert api.delete(f"/api/v1/documents/{document_id}/").status_code == 204
    audit = api.get(f"/api/v1/projects/{project.id}/audit/").json()["results"]
    actions = [(entry["action"], entry["actor"]) for entry in audit]
    assert ("document.uploaded", f"user:{user.id}") in actions
    assert actions[-1] == ("document.deleted", f"user:{user.id}")
    assert "report.md" in audit[-1]["target"]
    assert not Document.objects.filter(id=document_id).exists()


def test_reindex_and_retry_are_audited(api, user, project):
    document = submit_bytes(project, markdown_document(), "notes.md").document
    job_services.job_fail(job_id=document.current_job_id, error_type="x", error_message="stopped")
    assert api.post(f"/api/v1/documents/{document.id}/reindex/").status_code == 202
    document.refresh_from_db()
    job_services.job_fail(job_id=document.current_job_id, error_type="x", error_message="stopped")
    Chunk.objects.create(document=document, position=0, content="x", content_sha256="0" * 64, status="error")
    assert api.post(f"/api/v1/documents/{document.id}/retry/").status_code == 202
    actions = [entry["action"] for entry in api.get(f"/api/v1/projects/{project.id}/audit/").json()["results"]]
    assert actions[-2:] == ["document.reindex", "document.retry"]


def test_history_and_audit_past_retention_are_purged(settings, project):
    from datetime import timedelta

    from django.utils import timezone

    from common.models import AuditEntry, StatusChange

    document = submit_bytes(project, markdown_document(), "notes.md").document
    settings.MIRAGE_HISTORY_RETENTION_DAYS = 90
    assert StatusChange.objects.filter(entity_id=document.id).exists()
    StatusChange.objects.update(at=timezone.now() - timedelta(days=91))
    AuditEntry.objects.filter(project_id=project.id).update(at=timezone.now() - timedelta(days=91))
    kept = StatusChange.objects.create(entity="job", entity_id=1, to_status="pending", actor="system")
    assert history.history_purge() >= 2
    assert list(StatusChange.objects.values_list("id", flat=True)) == [kept.id]
    assert not AuditEntry.objects.exists()


def test_a_lost_callback_repair_names_the_reconciler_and_the_reason(project):
    document = submit_bytes(project, markdown_document(), "notes.md").document
    job_id = document.current_job_id
    from jobs.models import Job

    Job.objects.filter(id=job_id).update(status="running")
    Document.objects.filter(id=document.id).update(status="indexing", parsing_finished_at="2026-01-01T00:00:00Z")
    Chunk.objects.create(
        document=document,
        position=0,
        content="x",
        content_sha256="0" * 64,
        status="ready",
        embedding=[0.1] * project.embedding_dimensions,
    )
    assert services.documents_finalize_settled() == [document.id]
    from common.models import StatusChange

    last = StatusChange.objects.filter(entity="document", entity_id=document.id).order_by("id").last()
    assert (last.from_status, last.to_status, last.actor) == (
        "indexing",
        "ready",
        "reconciler:finalize_settled_documents",
    )
    assert "callback never came" in last.reason
