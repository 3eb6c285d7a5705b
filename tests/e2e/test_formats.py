"""Office files and scans through the real pipeline (API upload, a real
Celery worker, Postgres, Redis): each readable one ends `ready` with its
structure; the hostile and unreadable ones end in a clear error or a 415
with a reason; the worker answers afterwards; a phrase that exists only in
the picture of a scanned page is found by keyword and semantic search."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from documents.models import Chunk, Document
from documents.parsers import ocr
from mirage.celery import app as celery_app
from tests.support import office_files
from tests.support.corpus import FORMATS
from tests.support.factories import make_project, make_user
from tests.support.ocr import requires_tesseract
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not FORMATS.is_dir(), reason="shared formats corpus not present"),
]

# Where each type records its place in the document.
PLACE_KEYS = {
    "docx": "heading_path",
    "odt": "heading_path",
    "pptx": "slide",
    "xlsx": "sheet",
    "ods": "sheet",
    "pdf": "page",
}


@pytest.fixture
def api_and_project(worker):
    user = make_user()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client, make_project(members=[user])


def upload(client, project, name: str, content: bytes):
    return client.post(
        f"/api/v1/projects/{project.id}/documents/", {"file": SimpleUploadedFile(name, content)}, format="multipart"
    )


def wait_final(document_ids):
    wait_until(
        lambda: not Document.objects.filter(id__in=document_ids, status__in=Document.ACTIVE_STATUSES).exists(),
        timeout=600,
        interval=0.5,
        message="every document final",
    )
    return {document.filename: document for document in Document.objects.filter(id__in=document_ids)}


@requires_tesseract("eng")
def test_office_files_and_scans_end_ready_with_their_structure(api_and_project):
    client, project = api_and_project
    files = {path.name: path.read_bytes() for path in sorted((FORMATS / "office").iterdir())}
    files["pdflatex-pages-1-2-scan.pdf"] = office_files.SCAN.read_bytes()
    files["manual.docx"] = office_files.rich_docx()
    files["review.pptx"] = office_files.rich_pptx()
    ids = []
    for name, content in files.items():
        response = upload(client, project, name, content)
        assert response.status_code in (201, 202), (name, response.status_code, response.content)
        ids.append(response.json()["id"])

    documents = wait_final(ids)

    expected_types = {
        "htmlcssguide.docx": "docx",
        "cppguide.odt": "odt",
        "pdflatex-4-pages.pptx": "pptx",
        "corpus-manifest.xlsx": "xlsx",
        "corpus-manifest.ods": "ods",
        "pdflatex-pages-1-2-scan.pdf": "pdf",
        "manual.docx": "docx",
        "review.pptx": "pptx",
    }
    assert {name: document.file_type for name, document in documents.items()} == expected_types
    for name, document in documents.items():
        assert document.status == "ready", (name, document.status, document.error_message)
        chunks = list(Chunk.objects.filter(document=document).order_by("position"))
        assert chunks and all(chunk.status == "ready" for chunk in chunks), name
        key = PLACE_KEYS[document.file_type]
        assert all(key in chunk.structure for chunk in chunks), (name, key)
        assert any(chunk.structure[key] for chunk in chunks), (name, key)

    def structures(name):
        return [chunk.structure for chunk in Chunk.objects.filter(document=documents[name]).order_by("position")]

    assert ["Google HTML/CSS Style Guide", "General", "General Style Rules", "Protocol"] in [
        structure["heading_path"] for structure in structures("htmlcssguide.docx")
    ]
    assert {structure["slide"] for structure in structures("pdflatex-4-pages.pptx")} == {1, 2, 3, 4}
    assert any(structure.get("notes") for structure in structures("review.pptx"))
    assert {structure["sheet"] for structure in structures("corpus-manifest.xlsx")} == {"corpus-manifest"}
    scan = structures("pdflatex-pages-1-2-scan.pdf")
    assert {structure["page"] for structure in scan} == {1, 2}
    assert all(structure["ocr"] is True and structure["ocr_confidence"] > 60 for structure in scan)
    header = "| file | type | source_repo | source_path | commit | licence | bytes | notes |"
    sheet_chunks = Chunk.objects.filter(document=documents["corpus-manifest.ods"])
    assert sheet_chunks.count() > 1
    assert all(chunk.content.startswith(header) for chunk in sheet_chunks)


@requires_tesseract("eng")
def test_a_phrase_only_in_a_scanned_page_is_found_by_keyword_and_semantic_search(api_and_project):
    client, project = api_and_project
    ids = [
        upload(client, project, name, content).json()["id"]
        for name, content in [
            ("scan.pdf", office_files.SCAN.read_bytes()),
            ("manual.docx", office_files.rich_docx()),
            ("rivers.xlsx", office_files.sparse_xlsx()),
        ]
    ]
    documents = wait_final(ids)
    assert {document.status for document in documents.values()} == {"ready"}
    # The phrase is in no text layer: the scan has none.
    assert (
        not Chunk.objects.filter(document__in=documents.values())
        .exclude(structure__ocr=True)
        .filter(content__icontains="gefburn")
        .exists()
    )

    for mode in ("keyword", "semantic"):
        response = client.get(f"/api/v1/projects/{project.id}/search/", {"q": office_files.SCAN_PHRASE, "mode": mode})
        assert response.status_code == 200, response.content
        top = response.json()[0]
        assert top["document_id"] == documents["scan.pdf"].id, mode
        assert office_files.SCAN_PHRASE in top["content"], mode
        assert top["structure"]["page"] in (1, 2) and top["structure"]["ocr"] is True, mode


def test_bad_office_files_end_in_a_clear_error_or_refusal_and_the_worker_lives(api_and_project):
    client, project = api_and_project
    refused = {
        "secret.docx": office_files.encrypted_docx(),
        "archive.docx": office_files.plain_zip(),
    }
    for name, content in refused.items():
        response = upload(client, project, name, content)
        assert response.status_code == 415, (name, response.content)
        assert response.json()["detail"], name
    assert "password-protected" in upload(client, project, "secret.docx", refused["secret.docx"]).json()["detail"]
    assert "plain ZIP archive" in upload(client, project, "archive.docx", refused["archive.docx"]).json()["detail"]

    failing = {
        "cut.docx": (office_files.corrupt_docx(), "file is damaged or truncated"),
        "bomb.xlsx": (office_files.zip_bomb_xlsx(), "file looks like a zip bomb"),
        "pictures.pptx": (office_files.pictures_only_pptx(), "presentation has no text"),
    }
    ids = []
    for name, (content, _) in failing.items():
        response = upload(client, project, name, content)
        assert response.status_code in (201, 202), (name, response.content)
        ids.append(response.json()["id"])
    documents = wait_final(ids)
    for name, (_, message) in failing.items():
        document = documents[name]
        assert document.status == "error", (name, document.status)
        assert document.error_message.startswith(message), (name, document.error_message)
        assert "Traceback" not in document.error_message
        assert not Chunk.objects.filter(document=document).exists()

    # The worker answers, and still indexes a good file after the bad ones.
    assert celery_app.control.ping(timeout=5.0)
    response = upload(client, project, "manual.docx", office_files.rich_docx())
    assert wait_final([response.json()["id"]])["manual.docx"].status == "ready"


@requires_tesseract("eng", "deu")
@pytest.mark.skipif(not office_files.GERMAN_SOURCE.exists(), reason="shared corpus not present")
def test_a_scan_in_a_second_language_ends_ready_in_that_language(api_and_project, monkeypatch):
    client, project = api_and_project
    # What MIRAGE_OCR_LANGUAGES=deu+eng sets when the worker starts.
    monkeypatch.setattr(ocr, "LANGUAGES", "deu+eng")
    scan = office_files.image_only_pdf(office_files.GERMAN_SOURCE, page_index=5)
    response = upload(client, project, "topologie-scan.pdf", scan)
    document = wait_final([response.json()["id"]])["topologie-scan.pdf"]

    assert document.status == "ready", document.error_message
    chunks = list(Chunk.objects.filter(document=document).order_by("position"))
    assert all(chunk.structure["ocr"] is True and chunk.structure["page"] == 1 for chunk in chunks)
    text = " ".join(chunk.content for chunk in chunks)
    assert "Topologische Räume" in text and "folgenden Eigenschaften" in text
    hits = client.get(f"/api/v1/projects/{project.id}/search/", {"q": "topologische Räume", "mode": "keyword"}).json()
    assert hits and hits[0]["document_id"] == document.id
