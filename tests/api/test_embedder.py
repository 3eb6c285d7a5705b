"""POST/GET /api/v1/projects/{id}/embedder/: who may start a migration to
another embedding model, what is refused and why, and what the project
says while it runs."""

import pytest

from documents.models import Project
from jobs.models import Job
from tests.support.factories import make_project, make_user

pytestmark = [pytest.mark.unit, pytest.mark.django_db]


@pytest.fixture
def owned(user):
    return make_project(owner=user)


def url(project) -> str:
    return f"/api/v1/projects/{project.id}/embedder/"


def test_the_owner_starts_a_migration_and_the_project_shows_it(api, user, owned):
    assert api.get(url(owned)).json() == {
        "embedder": "hash",
        "embedding_model": "hash-384",
        "embedding_dimensions": 384,
        "migration": None,
    }

    response = api.post(url(owned), {"embedder": "local"}, format="json")

    assert response.status_code == 202, response.content
    job = response.json()
    assert job["kind"] == "migrate_embedder" and job["project_id"] == owned.id
    assert job["metadata"]["to_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    state = api.get(url(owned)).json()
    assert state["embedding_model"] == "hash-384"
    assert state["migration"]["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert state["migration"]["embedding_dimensions"] == 384
    assert state["migration"]["job"]["id"] == job["id"]
    assert api.get(f"/api/v1/jobs/{job['id']}/").status_code == 200
    audit = api.get(f"/api/v1/projects/{owned.id}/audit/").json()["results"]
    assert (audit[-1]["action"], audit[-1]["actor"]) == ("embedder.migration_started", f"user:{user.id}")


def test_a_second_migration_while_one_runs_is_a_conflict_naming_the_job(api, owned):
    first = api.post(url(owned), {"embedder": "local"}, format="json").json()
    again = api.post(url(owned), {"embedder": "local"}, format="json")
    assert again.status_code == 409
    assert f"job {first['id']}" in again.json()["detail"]
    assert Job.objects.filter(kind="migrate_embedder").count() == 1


def test_a_migration_to_the_model_in_use_is_a_conflict_that_says_so(api, owned):
    response = api.post(url(owned), {"embedder": "hash"}, format="json")
    assert response.status_code == 409
    assert "already uses hash-384" in response.json()["detail"]
    assert not Job.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [({"embedder": "word2vec"}, "embedder"), ({}, "embedder"), ({"embedder": "local", "model": "x"}, "model")],
)
def test_a_bad_spec_is_a_400_naming_the_field(api, owned, body, field):
    response = api.post(url(owned), body, format="json")
    assert response.status_code == 400
    assert response.json()[field][0]
    assert Project.objects.get(id=owned.id).next_embedder == ""


def test_a_spec_the_deployment_cannot_build_is_a_400_with_its_reason(api, owned, settings):
    from documents.embeddings import clear_embedder_cache

    settings.MIRAGE_OPENAI_MODEL = "a-model-nobody-knows"
    settings.MIRAGE_OPENAI_DIMENSIONS = None
    clear_embedder_cache()
    try:
        response = api.post(url(owned), {"embedder": "openai"}, format="json")
    finally:
        clear_embedder_cache()
    assert response.status_code == 400
    assert "a-model-nobody-knows" in response.json()["embedder"][0]


def test_a_member_who_is_not_the_owner_may_look_but_not_start(owned):
    from tests.api.conftest import client_for

    member = make_user()
    owned.members.add(member)
    client = client_for(member)
    assert client.get(url(owned)).status_code == 200
    response = client.post(url(owned), {"embedder": "local"}, format="json")
    assert response.status_code == 403
    assert "owner" in response.json()["detail"]


def test_staff_may_start_a_migration_of_any_project(staff_api, owned):
    assert staff_api.post(url(owned), {"embedder": "local"}, format="json").status_code == 202
