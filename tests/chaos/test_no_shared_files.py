"""Nothing shared but PostgreSQL and Redis: a web process and an ingest
worker with two different, empty media roots still take an upload to
`ready` and reindex it, because the file travels through the database."""

from __future__ import annotations

import sys

import httpx
import pytest
from rest_framework.authtoken.models import Token

from common.filestore.models import StoredFile
from documents.models import Document
from jobs.models import Job
from tests.support.factories import make_project, make_user, markdown_document
from tests.support.processes import Stack, free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack(transactional_db, tmp_path):
    stack = Stack(tmp_path / "stack", MIRAGE_RECONCILE_INTERVAL_SECONDS="2")
    stack.start_redis()
    yield stack
    stack.stop_all()


def test_web_and_ingest_with_separate_empty_media_roots_index_and_reindex(stack, tmp_path):
    web_media, ingest_media = tmp_path / "web-media", tmp_path / "ingest-media"
    web_media.mkdir()
    ingest_media.mkdir()
    user = make_user()
    project = make_project(members=[user])
    token = Token.objects.create(user=user).key

    stack.env["MIRAGE_TEST_MEDIA_ROOT"] = str(ingest_media)
    stack.start_worker("ingest", "ingest,maintenance,embed", concurrency=2)
    stack.start_beat()
    stack.env["MIRAGE_TEST_MEDIA_ROOT"] = str(web_media)
    port = free_port()
    stack.spawn(
        "web", [sys.executable, "-m", "uvicorn", "mirage.asgi:application", "--host", "127.0.0.1", "--port", str(port)]
    )
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Token {token}"}, timeout=60)

    def web_answers() -> bool:
        try:
            return api.get("/api/v1/projects/").status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(web_answers, timeout=60, interval=0.3, message="web answers")
    content = markdown_document(sections=4)
    response = api.post(f"/api/v1/projects/{project.id}/documents/", files={"file": ("rivers.md", content)})
    assert response.status_code == 201, response.text
    document_id = response.json()["id"]

    def status() -> str:
        return Document.objects.values_list("status", flat=True).get(id=document_id)

    wait_until(lambda: status() == "ready", timeout=120, interval=0.3, message="document ready")
    reindex = api.post(f"/api/v1/documents/{document_id}/reindex/")
    assert reindex.status_code == 202, reindex.text
    wait_until(
        lambda: Job.objects.get(id=reindex.json()["id"]).status == "completed",
        timeout=120,
        interval=0.3,
        message="reindex completed",
    )
    api.close()

    assert status() == "ready"
    assert StoredFile.objects.get().size == len(content)
    # Neither process wrote to (or read from) its media root.
    assert list(web_media.rglob("*")) == [] and list(ingest_media.rglob("*")) == []
