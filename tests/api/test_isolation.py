"""A second user sees nothing of the first user's project: 404 everywhere,
nothing in lists or search."""

import pytest

from documents.webhooks import services as webhooks
from documents.webhooks.models import WebhookDelivery
from jobs.models import Job
from tests.support.factories import markdown_document, submit_bytes

pytestmark = [pytest.mark.unit, pytest.mark.django_db]


@pytest.fixture
def owned(project):
    submission = submit_bytes(project, markdown_document(), "private.md")
    return project, submission.document, submission.job


@pytest.fixture
def hooked(owned):
    project = owned[0]
    webhook = webhooks.webhook_create(
        project=project, url="https://hooks.example.org/x", events=["job.final"], actor="system"
    )
    delivery = WebhookDelivery.objects.create(
        webhook=webhook, message_id="msg_isolation", event_type="job.final", body="{}", state="failed"
    )
    return webhook, delivery


def test_other_user_gets_404_on_every_endpoint_of_the_project(other_api, owned, hooked):
    project, document, job = owned
    webhook, delivery = hooked
    hook = f"/api/v1/projects/{project.id}/webhooks/{webhook.id}/"
    requests = [
        ("get", f"/api/v1/projects/{project.id}/"),
        ("get", f"/api/v1/projects/{project.id}/documents/"),
        ("post", f"/api/v1/projects/{project.id}/documents/"),
        ("post", f"/api/v1/projects/{project.id}/imports/"),
        ("post", f"/api/v1/projects/{project.id}/pause/"),
        ("post", f"/api/v1/projects/{project.id}/resume/"),
        ("get", f"/api/v1/projects/{project.id}/search/?q=river"),
        ("get", f"/api/v1/projects/{project.id}/embedder/"),
        ("post", f"/api/v1/projects/{project.id}/embedder/"),
        ("get", f"/api/v1/documents/{document.id}/"),
        ("delete", f"/api/v1/documents/{document.id}/"),
        ("get", f"/api/v1/documents/{document.id}/chunks/"),
        ("get", f"/api/v1/documents/{document.id}/history/"),
        ("get", f"/api/v1/projects/{project.id}/audit/"),
        ("get", f"/api/v1/jobs/{job.id}/history/"),
        ("post", f"/api/v1/documents/{document.id}/reindex/"),
        ("post", f"/api/v1/documents/{document.id}/retry/"),
        ("get", f"/api/v1/jobs/{job.id}/"),
        ("post", f"/api/v1/jobs/{job.id}/cancel/"),
        ("get", f"/api/v1/projects/{project.id}/webhooks/"),
        ("post", f"/api/v1/projects/{project.id}/webhooks/"),
        ("get", hook),
        ("patch", hook),
        ("delete", hook),
        ("get", f"{hook}deliveries/"),
        ("post", f"{hook}deliveries/{delivery.id}/redeliver/"),
    ]
    for method, url in requests:
        response = getattr(other_api, method)(url)
        assert response.status_code == 404, (method, url, response.status_code)


def test_other_user_lists_show_nothing_of_the_project(other_api, owned):
    project, _, _ = owned
    assert other_api.get("/api/v1/projects/").json()["count"] == 0
    assert other_api.get("/api/v1/jobs/").json()["count"] == 0
    assert other_api.get(f"/api/v1/jobs/?project={project.id}").json()["count"] == 0


def test_the_member_still_sees_everything(api, owned, hooked):
    project, document, job = owned
    webhook, delivery = hooked
    assert api.get(f"/api/v1/projects/{project.id}/webhooks/{webhook.id}/deliveries/").json()["count"] == 1
    assert api.get(f"/api/v1/documents/{document.id}/").status_code == 200
    assert api.get("/api/v1/jobs/").json()["count"] == 1
    assert api.get(f"/api/v1/documents/{document.id}/history/").json()["count"] >= 1
    assert api.get(f"/api/v1/jobs/{job.id}/history/").json()["count"] >= 1
    assert api.get(f"/api/v1/projects/{project.id}/audit/").json()["count"] >= 1


def test_staff_see_all_projects(staff_api, owned):
    project, document, _ = owned
    assert staff_api.get(f"/api/v1/projects/{project.id}/").status_code == 200
    assert staff_api.get(f"/api/v1/documents/{document.id}/").status_code == 200


def test_another_projects_owner_can_neither_start_nor_see_a_migration(user, other_api, other_user):
    from tests.api.conftest import client_for
    from tests.support.factories import make_project

    mine = make_project(owner=user)
    make_project(owner=other_user)
    started = client_for(user).post(f"/api/v1/projects/{mine.id}/embedder/", {"embedder": "local"}, format="json")
    assert started.status_code == 202
    job_id = started.json()["id"]

    for method, url in [
        ("get", f"/api/v1/projects/{mine.id}/embedder/"),
        ("post", f"/api/v1/projects/{mine.id}/embedder/"),
        ("get", f"/api/v1/jobs/{job_id}/"),
        ("get", f"/api/v1/jobs/{job_id}/history/"),
        ("post", f"/api/v1/jobs/{job_id}/cancel/"),
    ]:
        response = getattr(other_api, method)(url, {"embedder": "local"}, format="json")
        assert response.status_code == 404, (method, url, response.status_code)
    assert other_api.get("/api/v1/jobs/?kind=migrate_embedder").json()["count"] == 0
    assert Job.objects.get(id=job_id).status != "cancelled"
