"""What a client sees agrees with itself and tells the truth: authentication
schemes, field names in errors, project names that reveal nothing about
others, file names kept as given, Swagger UI without internet access."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from documents import selectors
from documents.models import Chunk, Document
from tests.support.factories import make_project, markdown_document, submit_bytes

pytestmark = [pytest.mark.unit, pytest.mark.django_db]


def test_a_bearer_token_is_accepted_like_a_token(user):
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.key}")
    assert client.get("/api/v1/projects/").status_code == 200
    client.credentials(HTTP_AUTHORIZATION="Bearer not-a-token")
    assert client.get("/api/v1/projects/").status_code == 401


def test_the_schema_documents_both_schemes(api):
    schemes = api.get("/api/schema/?format=json").json()["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The same token as `Authorization: Token <key>`.",
    }
    assert "tokenAuth" in schemes


def test_an_upload_in_the_wrong_field_names_the_expected_field(api, project):
    response = api.post(
        f"/api/v1/projects/{project.id}/documents/",
        {"document": SimpleUploadedFile("a.md", markdown_document())},
        format="multipart",
    )
    assert response.status_code == 400
    assert "file" in response.json()["document"][0]
    assert "the fields are: file, metadata" in response.json()["document"][0]


def test_a_project_name_taken_by_a_stranger_is_free_for_you(api, other_user):
    make_project(name="research", members=[other_user], owner=other_user)
    response = api.post("/api/v1/projects/", {"name": "research", "embedder": "hash"}, format="json")
    assert response.status_code == 201, response.content


def test_your_own_project_name_twice_is_refused_in_your_words(api):
    assert api.post("/api/v1/projects/", {"name": "notes", "embedder": "hash"}, format="json").status_code == 201
    again = api.post("/api/v1/projects/", {"name": "notes", "embedder": "hash"}, format="json")
    assert again.status_code == 400
    assert again.json() == {"name": ["You already have a project with this name."]}


def test_an_upload_keeps_its_name_as_given_and_only_the_stored_file_is_sanitised(api, project):
    name = "Rapport d'été — 日本語 🚀.md"
    response = api.post(
        f"/api/v1/projects/{project.id}/documents/",
        {"file": SimpleUploadedFile(name, markdown_document())},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    assert response.json()["filename"] == name
    document = Document.objects.get(id=response.json()["id"])
    assert document.filename == name
    stored = document.file.name.rsplit("/", 1)[-1]
    assert re.fullmatch(r"[\w.\- ()+,@]+", stored)


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("../../etc/passwd.md", "passwd.md"),
        ("C:\\Users\\me\\report.md", "report.md"),
        ("invoice\u202egpj.md", "invoicegpj.md"),
        ("tab\tand\x00null.md", "tabandnull.md"),
        ("\u2066isolated\u2069.md", "isolated.md"),
    ],
)
def test_only_dangerous_parts_of_a_name_are_stripped(given, shown):
    from documents.services import display_filename

    assert display_filename(given) == shown


def test_swagger_ui_loads_its_assets_from_the_deployment(api):
    page = api.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html
    external = re.findall(r"""(?:src|href)=["'](https?://[^"']+)""", html)
    assert external == []
    assert re.search(r"""src=["']/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle\.js""", html)


def test_an_indexing_document_never_reads_100_percent(project):
    document = submit_bytes(project, markdown_document(), "a.md").document
    Document.objects.filter(id=document.id).update(status="indexing")
    for position in range(3):
        Chunk.objects.create(
            document=document,
            position=position,
            content=f"c{position}",
            content_sha256=f"{position}" * 64,
            status="ready",
            embedding=[0.1] * project.embedding_dimensions,
        )
    annotated = selectors.documents_with_progress(Document.objects.filter(id=document.id)).get()
    assert annotated.chunks_processed == annotated.chunks_total == 3
    assert selectors.progress_percent(annotated) == 99
    Document.objects.filter(id=document.id).update(status="ready")
    annotated = selectors.documents_with_progress(Document.objects.filter(id=document.id)).get()
    assert selectors.progress_percent(annotated) == 100


def test_healthz_names_worker_hosts_to_staff_only(api, staff):
    from tests.api.conftest import client_for

    member = api.get("/healthz").json()
    assert "names" not in member["workers"]
    assert all(isinstance(queue["consumers"], int) for queue in member["queues"].values())
    staff_view = client_for(staff).get("/healthz").json()
    assert "names" in staff_view["workers"]
    assert all(isinstance(queue["consumers"], list) for queue in staff_view["queues"].values())
