"""The pause and resume endpoints: who may call them, what they answer, and
how paused work shows in the other answers."""

import pytest

from common.models import AuditEntry
from tests.support.factories import markdown_document, submit_bytes

pytestmark = [pytest.mark.unit, pytest.mark.django_db]


def test_a_member_pauses_and_resumes_a_project_and_every_answer_says_so(api, user, project):
    submission = submit_bytes(project, markdown_document(), "held.md")

    response = api.post(f"/api/v1/projects/{project.id}/pause/", {"reason": "provider quota"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert (body["scope"], body["project_id"], body["reason"], body["paused_by"]) == (
        "project",
        project.id,
        "provider quota",
        f"user:{user.pk}",
    )
    assert body["resumed_at"] is None

    shown = api.get(f"/api/v1/projects/{project.id}/").json()
    assert shown["paused"] is True and "provider quota" in shown["paused_reason"]
    document = api.get(f"/api/v1/documents/{submission.document.id}/").json()
    assert document["status"] == "pending" and document["paused"] is True
    assert document["current_job"]["paused"] is True and document["current_job"]["priority"] == "normal"
    job = api.get(f"/api/v1/jobs/{submission.job.id}/").json()
    assert job["paused"] is True and "provider quota" in job["paused_reason"]

    again = api.post(f"/api/v1/projects/{project.id}/pause/", {"reason": "twice"}, format="json")
    assert again.status_code == 409 and "already paused" in again.json()["detail"]

    resumed = api.post(f"/api/v1/projects/{project.id}/resume/", {}, format="json")
    assert resumed.status_code == 200 and resumed.json()["resumed_at"] is not None
    assert api.get(f"/api/v1/projects/{project.id}/").json()["paused"] is False
    assert api.post(f"/api/v1/projects/{project.id}/resume/", {}, format="json").status_code == 409
    actions = set(AuditEntry.objects.filter(project_id=project.id).values_list("action", flat=True))
    assert {"project.paused", "project.resumed"} <= actions


def test_a_pause_needs_a_reason(api, project):
    response = api.post(f"/api/v1/projects/{project.id}/pause/", {"reason": "  "}, format="json")
    assert response.status_code == 400 and "reason" in response.json()
    assert api.post(f"/api/v1/projects/{project.id}/pause/", {}, format="json").status_code == 400


def test_only_staff_pause_the_deployment(api, staff_api, project):
    assert api.post("/api/v1/system/pause/", {"reason": "upgrade"}, format="json").status_code == 403
    response = staff_api.post("/api/v1/system/pause/", {"reason": "upgrade"}, format="json")
    assert response.status_code == 200 and response.json()["scope"] == "deployment"
    shown = api.get(f"/api/v1/projects/{project.id}/").json()
    assert shown["paused"] is True and "the deployment was paused" in shown["paused_reason"]
    assert api.post("/api/v1/system/resume/", {}, format="json").status_code == 403
    assert staff_api.post("/api/v1/system/resume/", {}, format="json").status_code == 200
    assert staff_api.post("/api/v1/system/resume/", {}, format="json").status_code == 409
    assert AuditEntry.objects.filter(project_id=project.id, action="deployment.paused").exists()
