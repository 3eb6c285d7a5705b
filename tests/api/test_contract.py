"""Contract tests: every endpoint and status code, on real Postgres and Redis."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from documents.models import Chunk, Document
from jobs.models import Job
from tests.support.factories import make_project, markdown_document, submit_bytes

pytestmark = [pytest.mark.unit, pytest.mark.django_db]

MARKDOWN = markdown_document(sections=2)


def upload(api, project_id, content=MARKDOWN, name="guide.md", **extra):
    return api.post(
        f"/api/v1/projects/{project_id}/documents/",
        {"file": SimpleUploadedFile(name, content), **extra},
        format="multipart",
    )


# --- auth -------------------------------------------------------------------------

ENDPOINTS = [
    ("get", "/api/v1/projects/"),
    ("post", "/api/v1/projects/"),
    ("get", "/api/v1/projects/1/"),
    ("get", "/api/v1/projects/1/documents/"),
    ("post", "/api/v1/projects/1/documents/"),
    ("post", "/api/v1/projects/1/imports/"),
    ("post", "/api/v1/projects/1/pause/"),
    ("post", "/api/v1/projects/1/resume/"),
    ("post", "/api/v1/system/pause/"),
    ("post", "/api/v1/system/resume/"),
    ("get", "/api/v1/projects/1/search/?q=x"),
    ("get", "/api/v1/documents/1/"),
    ("delete", "/api/v1/documents/1/"),
    ("get", "/api/v1/documents/1/chunks/"),
    ("post", "/api/v1/documents/1/reindex/"),
    ("post", "/api/v1/documents/1/retry/"),
    ("get", "/api/v1/jobs/"),
    ("get", "/api/v1/jobs/1/"),
    ("post", "/api/v1/jobs/1/cancel/"),
    ("get", "/api/schema/"),
    ("get", "/healthz"),
]


@pytest.mark.parametrize("method,url", ENDPOINTS)
def test_every_endpoint_requires_authentication(client, method, url):
    response = getattr(client, method)(url)
    assert response.status_code == 401


def test_a_bad_token_is_401(client):
    response = client.get("/api/v1/projects/", HTTP_AUTHORIZATION="Token not-a-real-token")
    assert response.status_code == 401


# --- projects ---------------------------------------------------------------------


def test_create_project_pins_the_model_and_makes_the_creator_a_member(api, user):
    response = api.post("/api/v1/projects/", {"name": "handbook", "embedder": "hash"}, format="json")
    assert response.status_code == 201
    body = response.json()
    assert body["embedding_model"] == "hash-384"
    assert body["embedding_dimensions"] == 384
    assert body["document_counts"]["ready"] == 0
    listed = api.get("/api/v1/projects/").json()
    assert [p["name"] for p in listed["results"]] == ["handbook"]


@pytest.mark.parametrize(
    "payload,field",
    [
        ({"name": ""}, "name"),
        ({"name": "x", "embedder": "some.module.Class"}, "embedder"),
        ({"name": "x", "colour": "blue"}, "colour"),
        ({}, "name"),
    ],
)
def test_bad_project_input_is_400_with_a_field_message(api, payload, field):
    response = api.post("/api/v1/projects/", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_malformed_json_is_400(api):
    response = api.post("/api/v1/projects/", data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert "detail" in response.json()


def test_project_detail_counts_documents_by_status(api, project):
    submit_bytes(project, MARKDOWN, "a.md")
    body = api.get(f"/api/v1/projects/{project.id}/").json()
    assert body["document_counts"]["pending"] == 1


# --- uploads ------------------------------------------------------------------------


def test_upload_answers_201_with_a_pending_document_and_its_job(api, project):
    response = upload(api, project.id, metadata=json.dumps({"team": "docs"}))
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "pending"
    assert body["filename"] == "guide.md"
    assert body["file_type"] == "markdown"
    assert body["metadata"] == {"team": "docs"}
    assert body["current_job"]["kind"] == "index_document"
    assert body["current_job"]["status"] in ("pending", "running")


def test_uploading_identical_bytes_answers_200_with_the_same_document(api, project):
    first = upload(api, project.id).json()
    second = upload(api, project.id, name="copy.md")
    assert second.status_code == 200
    assert second.json()["id"] == first["id"]
    assert Job.objects.filter(subject_id=first["id"]).count() == 1


def test_empty_upload_is_400(api, project):
    response = upload(api, project.id, content=b"", name="empty.md")
    assert response.status_code == 400
    assert "empty" in json.dumps(response.json())


def test_oversized_upload_is_413(api, project, settings):
    settings.MIRAGE_MAX_UPLOAD_MB = 1
    response = upload(api, project.id, content=b"word " * 300_000, name="big.txt")
    assert response.status_code == 413
    assert "MB" in response.json()["detail"]


def test_disguised_binary_is_415_with_the_detected_type(api, project):
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(range(256)) * 8
    response = upload(api, project.id, content=jpeg, name="notes.md")
    assert response.status_code == 415
    body = response.json()
    assert body["detected_type"] == "image/jpeg"
    assert "JPEG" in body["detail"]


def test_upload_without_a_file_is_400(api, project):
    response = api.post(f"/api/v1/projects/{project.id}/documents/", {}, format="multipart")
    assert response.status_code == 400
    assert "file" in response.json()


def test_malformed_metadata_is_400(api, project):
    response = upload(api, project.id, metadata="{broken")
    assert response.status_code == 400
    assert "metadata" in response.json()


def test_filenames_are_sanitised_and_stay_inside_the_project_s_folder(api, project):
    response = upload(api, project.id, name="../../etc/passwd.md")
    assert response.status_code == 201
    document = Document.objects.get(id=response.json()["id"])
    assert document.filename == "passwd.md"
    assert document.file.name.startswith(f"projects/{project.id}/")
    assert ".." not in document.file.name.split("/")


def test_document_list_is_paginated_and_filterable(api, project):
    submit_bytes(project, MARKDOWN, "a.md")
    submit_bytes(project, b"plain words in a text file", "b.txt")
    body = api.get(f"/api/v1/projects/{project.id}/documents/?type=text").json()
    assert body["count"] == 1 and body["results"][0]["filename"] == "b.txt"
    assert api.get(f"/api/v1/projects/{project.id}/documents/?status=ready").json()["count"] == 0
    assert api.get(f"/api/v1/projects/{project.id}/documents/?status=bogus").status_code == 400
    assert api.get(f"/api/v1/projects/{project.id}/documents/?page=abc").status_code == 400
    assert api.get(f"/api/v1/projects/{project.id}/documents/?unknown=1").status_code == 400


# --- documents ------------------------------------------------------------------------


def test_document_detail_reports_chunk_progress(api, project):
    document = submit_bytes(project, MARKDOWN, "a.md").document
    Chunk.objects.bulk_create(
        [
            Chunk(
                document=document,
                position=0,
                content="a",
                content_sha256="a",
                status="ready",
                embedding=[0.1] * 384,
                embedding_model="hash-384",
            ),
            Chunk(document=document, position=1, content="b", content_sha256="b", status="pending"),
        ]
    )
    body = api.get(f"/api/v1/documents/{document.id}/").json()
    assert body["chunks_total"] == 2
    assert body["chunks_processed"] == 1
    assert body["chunk_counts"] == {"pending": 1, "processing": 0, "ready": 1, "corrupted": 0, "error": 0}
    chunks = api.get(f"/api/v1/documents/{document.id}/chunks/?status=ready").json()
    assert chunks["count"] == 1 and chunks["results"][0]["content"] == "a"
    assert api.get(f"/api/v1/documents/{document.id}/chunks/?status=nope").status_code == 400


def test_delete_removes_the_document_its_chunks_and_file(api, project, django_capture_on_commit_callbacks):
    document = submit_bytes(project, MARKDOWN, "a.md").document
    storage, name = document.file.storage, document.file.name
    assert storage.exists(name)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.delete(f"/api/v1/documents/{document.id}/")
    assert response.status_code == 204
    assert not Document.objects.filter(id=document.id).exists()
    assert not storage.exists(name)


def test_reindex_and_retry_answer_202_with_a_new_job_or_409_while_busy(api, project):
    document = submit_bytes(project, MARKDOWN, "a.md").document
    busy = api.post(f"/api/v1/documents/{document.id}/reindex/")
    assert busy.status_code == 409
    Job.objects.filter(id=document.current_job_id).update(status="failed")
    response = api.post(f"/api/v1/documents/{document.id}/reindex/")
    assert response.status_code == 202
    assert response.json()["kind"] == "reindex_document"
    Job.objects.filter(id=response.json()["id"]).update(status="failed")
    Chunk.objects.create(
        document=document, position=0, content="x", content_sha256="0" * 64, status="error", error="provider refused"
    )
    retry = api.post(f"/api/v1/documents/{document.id}/retry/", {"include_corrupted": True}, format="json")
    assert retry.status_code == 202
    assert retry.json()["kind"] == "retry_chunks"
    assert retry.json()["metadata"]["include_corrupted"] is True


def test_retry_of_a_document_with_nothing_to_retry_is_refused_with_the_reason(api, project):
    document = submit_bytes(project, MARKDOWN, "a.md").document
    Job.objects.filter(id=document.current_job_id).update(status="completed", progress_percentage=100)
    Document.objects.filter(id=document.id).update(status="ready")
    Chunk.objects.create(
        document=document,
        position=0,
        content="x",
        content_sha256="0" * 64,
        status="ready",
        embedding=[0.1] * project.embedding_dimensions,
    )
    jobs_before = Job.objects.count()
    response = api.post(f"/api/v1/documents/{document.id}/retry/")
    assert response.status_code == 409
    assert "no chunk to retry" in response.json()["detail"]
    assert Job.objects.count() == jobs_before


# --- jobs -------------------------------------------------------------------------------


def test_jobs_list_filters_and_detail_has_every_field(api, project):
    submission = submit_bytes(project, MARKDOWN, "a.md")
    listed = api.get(f"/api/v1/jobs/?project={project.id}&kind=index_document").json()
    assert [job["id"] for job in listed["results"]] == [submission.job.id]
    assert api.get("/api/v1/jobs/?status=completed").json()["count"] == 0
    assert api.get("/api/v1/jobs/?status=nonsense").status_code == 400
    detail = api.get(f"/api/v1/jobs/{submission.job.id}/").json()
    for field in (
        "progress_percentage",
        "progress_message",
        "files_scanned",
        "files_indexed",
        "chunks_created",
        "chunks_failed",
        "error_message",
        "error_type",
        "error_traceback",
        "started_at",
        "completed_at",
        "cancelled_at",
        "metadata",
        "celery_task_id",
        "celery_chord_id",
    ):
        assert field in detail


def test_cancel_answers_202_and_409_once_finished(api, project):
    submission = submit_bytes(project, MARKDOWN, "a.md")
    response = api.post(f"/api/v1/jobs/{submission.job.id}/cancel/")
    assert response.status_code == 202
    assert response.json()["status"] == "cancelled"
    assert Document.objects.get(id=submission.document.id).status == "cancelled"
    again = api.post(f"/api/v1/jobs/{submission.job.id}/cancel/")
    assert again.status_code == 409
    assert "already finished" in again.json()["detail"]


# --- imports --------------------------------------------------------------------------------


def test_imports_are_staff_only(api, project):
    response = api.post(f"/api/v1/projects/{project.id}/imports/", {"path": "/tmp"}, format="json")
    assert response.status_code == 403


@pytest.mark.parametrize(
    "path,reason",
    [
        ("relative/dir", "absolute"),
        ("/srv/docs/../../etc", ".."),
        ("/etc", "outside"),
        ("/does/not/exist", "does not exist"),
    ],
)
def test_import_paths_are_validated(staff_api, staff, settings, tmp_path, path, reason):
    settings.MIRAGE_IMPORT_ROOTS = [str(tmp_path)]
    project = make_project(members=[staff])
    response = staff_api.post(f"/api/v1/projects/{project.id}/imports/", {"path": path}, format="json")
    assert response.status_code == 400
    assert reason in response.json()["path"][0]


def test_import_path_through_a_symlink_out_of_the_roots_is_refused(staff_api, staff, settings, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to("/etc")
    settings.MIRAGE_IMPORT_ROOTS = [str(root)]
    project = make_project(members=[staff])
    response = staff_api.post(f"/api/v1/projects/{project.id}/imports/", {"path": str(root / "escape")}, format="json")
    assert response.status_code == 400
    assert "outside" in response.json()["path"][0]


def test_import_inside_the_roots_answers_202_with_the_job(staff_api, staff, settings, tmp_path):
    settings.MIRAGE_IMPORT_ROOTS = [str(tmp_path)]
    project = make_project(members=[staff])
    response = staff_api.post(f"/api/v1/projects/{project.id}/imports/", {"path": str(tmp_path)}, format="json")
    assert response.status_code == 202
    assert response.json()["kind"] == "import_directory"


# --- search -----------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["", "?k=5", "?q=x&k=0", "?q=x&k=1000", "?q=x&mode=fuzzy", "?q=x&k=abc"])
def test_bad_search_parameters_are_400(api, project, query):
    assert api.get(f"/api/v1/projects/{project.id}/search/{query}").status_code == 400


def _ready_chunks(project, texts):
    from documents.embeddings import get_embedder

    document = submit_bytes(project, "\n\n".join(texts).encode(), "corpus.txt").document
    embedder = get_embedder("hash")
    Chunk.objects.bulk_create(
        [
            Chunk(
                document=document,
                position=i,
                content=text,
                content_sha256=str(i),
                status="ready",
                structure={"title": "corpus"},
                embedding=embedder.embed_batch([text])[0].vector,
                embedding_model="hash-384",
            )
            for i, text in enumerate(texts)
        ]
    )
    Document.objects.filter(id=document.id).update(status="ready")
    return document


@pytest.mark.parametrize("mode", ["semantic", "keyword", "hybrid"])
def test_search_returns_ranked_hits_with_structure_and_score(api, project, mode):
    document = _ready_chunks(
        project, ["salmon swim upstream to spawn", "tax forms are due in april", "the river salmon run in autumn"]
    )
    response = api.get(f"/api/v1/projects/{project.id}/search/?q=salmon&k=2&mode={mode}")
    assert response.status_code == 200
    hits = response.json()
    assert len(hits) == 2
    assert all("salmon" in hit["content"] for hit in hits)
    assert {"chunk_id", "document_id", "filename", "content", "structure", "score"} <= set(hits[0])
    assert hits[0]["document_id"] == document.id
    assert isinstance(hits[0]["structure"], dict) and "title" in hits[0]["structure"]


# --- health and schema --------------------------------------------------------------------------


def test_healthz_reports_database_and_redis(api):
    body = api.get("/healthz").json()
    assert body["database"]["ok"] is True
    assert body["redis"]["ok"] is True
    assert "workers" in body


def test_openapi_schema_and_swagger_ui_are_served(api):
    schema = api.get("/api/schema/?format=json")
    assert schema.status_code == 200
    assert "/api/v1/projects/{project_id}/documents/" in schema.json()["paths"]
    assert api.get("/api/docs/").status_code == 200


def test_unknown_api_path_is_a_json_404(api):
    response = api.get("/api/v1/nothing-here/")
    assert response.status_code == 404
