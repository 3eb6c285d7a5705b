"""Per-project quotas: an upload past one is refused with a 409 naming the
quota and its value; the same bytes again (nothing new stored) still answer
200; operators set quotas in the admin, recorded in the audit log."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from common.models import AuditEntry
from documents.models import Chunk, Project
from tests.support.factories import make_user, markdown_document, submit_bytes

pytestmark = [pytest.mark.unit, pytest.mark.django_db]


def upload(api, project, content: bytes, name: str):
    return api.post(
        f"/api/v1/projects/{project.id}/documents/", {"file": SimpleUploadedFile(name, content)}, format="multipart"
    )


def test_an_upload_past_the_document_quota_is_409_naming_it(api, project):
    Project.objects.filter(id=project.id).update(max_documents=1)
    first = markdown_document(sections=2)
    assert upload(api, project, first, "one.md").status_code == 201
    refused = upload(api, project, markdown_document(sections=3), "two.md")
    assert refused.status_code == 409
    assert refused.json()["detail"] == "the project holds 1 documents, its quota (max_documents) is 1"
    # The same bytes again store nothing new: answered as before.
    assert upload(api, project, first, "one-again.md").status_code == 200


def test_chunk_and_size_quotas(api, project):
    submission = submit_bytes(project, markdown_document(sections=2), "a.md")
    Chunk.objects.create(document=submission.document, position=0, content="x", content_sha256="x")
    Project.objects.filter(id=project.id).update(max_chunks=1)
    refused = upload(api, project, markdown_document(sections=3), "b.md")
    assert refused.status_code == 409 and "quota (max_chunks) is 1" in refused.json()["detail"]

    Project.objects.filter(id=project.id).update(max_chunks=None, max_upload_mb_total=1)
    big = b"# Big\n\n" + b"word " * 300_000
    refused = upload(api, project, big, "big.md")
    assert refused.status_code == 409 and "quota (max_upload_mb_total) is 1 MB" in refused.json()["detail"]
    shown = api.get(f"/api/v1/projects/{project.id}/").json()
    assert (shown["max_documents"], shown["max_chunks"], shown["max_upload_mb_total"]) == (None, None, 1)


def test_operators_set_quotas_in_the_admin_and_the_audit_log_records_it(client, project):
    operator = make_user(staff=True)
    operator.is_superuser = True
    operator.save()
    client.force_login(operator)
    response = client.post(
        reverse("admin:documents_project_change", args=[project.id]),
        {
            "name": project.name,
            "members": [m.id for m in project.members.all()],
            "max_documents": "10",
            "max_chunks": "",
            "max_upload_mb_total": "5",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    project.refresh_from_db()
    assert (project.max_documents, project.max_upload_mb_total) == (10, 5)
    entry = AuditEntry.objects.get(project_id=project.id, action="project.quotas")
    assert entry.details == {"max_documents": 10, "max_upload_mb_total": 5}
