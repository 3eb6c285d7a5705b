"""The documents list builds its rows without DRF's per-field machinery
(documents.api.serializers.document_rows, jobs.api.serializers.job_row).
What it answers must stay what DocumentSerializer answers, key for key and
value for value, in every state a document and its job can be in, and its
pages must keep the standard envelope."""

import io
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from documents import selectors, services
from documents.api.serializers import DocumentSerializer, document_rows
from documents.models import Chunk, Document
from documents.services.transitions import document_transition
from jobs import services as job_services
from tests.support.factories import make_project, markdown_document

pytestmark = [pytest.mark.unit, pytest.mark.django_db]

OPERATOR = "operator:1"
# Chunks of the indexing document: three embedded, one failed, two to go.
CHUNK_STATUSES = [
    Chunk.Status.READY,
    Chunk.Status.READY,
    Chunk.Status.READY,
    Chunk.Status.ERROR,
    Chunk.Status.PROCESSING,
    Chunk.Status.PENDING,
]


def submit(project, name: str, **options) -> Document:
    content = markdown_document(1) + f"\n{name} of project {project.id}\n".encode()
    return services.document_submit(project=project, source=io.BytesIO(content), filename=name, **options).document


def begin_run(document: Document, *, parsed_at=None) -> None:
    document_transition(
        document_id=document.id,
        from_statuses=Document.Status.PENDING,
        to=Document.Status.INDEXING,
        actor="worker",
        reason="parsing",
        parsing_started_at=parsed_at,
        parsing_finished_at=parsed_at,
    )
    job_services.job_mark_working(job_id=document.current_job_id)


def end_run(document: Document, status: str) -> None:
    document_transition(
        document_id=document.id,
        from_statuses=Document.Status.INDEXING,
        to=status,
        actor="worker",
        reason="finished",
        error_message="could not read page 3" if status == Document.Status.ERROR else "",
        embedding_finished_at=timezone.now(),
        indexed_at=timezone.now() if status != Document.Status.ERROR else None,
    )
    if status == Document.Status.ERROR:
        job_services.job_fail(
            job_id=document.current_job_id,
            error_type="parse_error",
            error_message="could not read page 3",
            error_traceback='Traceback (most recent call last):\n  File "x.py", line 1\nValueError: page 3\n',
        )
    else:
        job_services.job_complete(job_id=document.current_job_id, message="finished")


def documents_in_every_state(settings) -> tuple[list[int], object]:
    """Documents of two projects: finished (ready, error), indexing with an
    ETA, queued behind others, cancelled, with upload metadata, and one
    whose job record is gone. Returns their ids, newest first, and the
    first project."""
    settings.MIRAGE_MAX_CONCURRENT_INDEXING_JOBS = 3
    project, other = make_project(), make_project()
    ready, failed, indexing = submit(project, "ready.md"), submit(project, "failed.md"), submit(project, "indexing.md")
    job_services.jobs_admit_pending()
    for document, status in ((ready, Document.Status.READY), (failed, Document.Status.ERROR)):
        begin_run(document, parsed_at=timezone.now())
        end_run(document, status)
    begin_run(indexing, parsed_at=timezone.now() - timedelta(minutes=5))
    job_services.job_update_metadata(job_id=indexing.current_job_id, chunks_final_at_start=1)
    Chunk.objects.bulk_create(
        Chunk(
            document=indexing,
            position=position,
            content=f"chunk {position}",
            content_sha256="0" * 64,
            status=status,
            embedding=[1.0] + [0.0] * (project.embedding_dimensions - 1) if status == Chunk.Status.READY else None,
            embedding_model=project.embedding_model if status == Chunk.Status.READY else "",
        )
        for position, status in enumerate(CHUNK_STATUSES)
    )
    finished = Chunk.objects.filter(document=indexing, status__in=Chunk.FINAL_STATUSES)
    finished.update(updated_at=timezone.now() - timedelta(minutes=2))
    finished.filter(position=0).update(updated_at=timezone.now() - timedelta(minutes=4))

    submit(project, "queued-first.md")
    submit(project, "queued-second.md", metadata={"source": "scanner", "pages": [1, 2]}, priority="high")
    cancelled = submit(project, "cancelled.md")
    job_services.job_cancel(job_id=cancelled.current_job_id, actor=OPERATOR, reason="not needed")
    orphan = submit(project, "job-gone.md")
    orphan.current_job.delete()
    submit(other, "other-project.md")

    ids = list(
        Document.objects.filter(project__in=[project, other])
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)
    )
    return ids, project


def serializer_representation(ids: list[int], now) -> bytes:
    documents = selectors.documents_with_progress(Document.objects.filter(id__in=ids)).order_by("-created_at", "-id")
    return JSONRenderer().render(DocumentSerializer(documents, many=True, context={"now": now}).data)


@pytest.mark.parametrize("pause", ["none", "project", "deployment"])
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
def test_list_rows_are_what_the_document_serializer_answers(settings, pause, zone):
    ids, project = documents_in_every_state(settings)
    if pause == "project":
        services.project_pause(project=project, reason="provider quota", actor=OPERATOR)
    elif pause == "deployment":
        services.deployment_pause(reason="database maintenance", actor=OPERATOR)
    now = timezone.now()

    with timezone.override(zone):
        expected = serializer_representation(ids, now)
        with CaptureQueriesContext(connection) as captured:
            documents = selectors.documents_page_with_progress(ids)
            rows = document_rows(documents, {"now": now})
        listed = JSONRenderer().render(rows)

    assert listed == expected
    # One query for the documents, one for the pauses in force: none per row.
    assert len(captured.captured_queries) == 2
    # The arrangement reached the states it is meant to cover.
    states = {(row["status"], (row["current_job"] or {}).get("status")) for row in rows}
    assert {("ready", "completed"), ("error", "failed"), ("indexing", "running"), ("pending", "pending")} <= states
    assert {("cancelled", "cancelled"), ("pending", None)} <= states
    assert any(row["eta_seconds"] for row in rows)
    assert sorted(row["queue_position"] for row in rows if row["queue_position"] is not None) == [0, 1, 2]
    assert any(row["paused"] for row in rows) == (pause != "none")


def test_a_list_row_is_the_document_s_detail(api, project):
    """Through HTTP: each row of the list is the document's own page (for
    finished documents, whose durations no longer run on)."""
    for name in ("one.md", "two.md", "three.md"):
        document = submit(project, name)
        job_services.jobs_admit_pending()
        begin_run(document, parsed_at=timezone.now())
        end_run(document, Document.Status.ERROR if name == "two.md" else Document.Status.READY)

    listed = api.get(f"/api/v1/projects/{project.id}/documents/").json()["results"]

    assert [row["filename"] for row in listed] == ["three.md", "two.md", "one.md"]
    for row in listed:
        detail = api.get(f"/api/v1/documents/{row['id']}/").json()
        assert list(row.items()) == list(detail.items())


def test_list_pages_keep_the_envelope_the_order_and_the_filters(api, project):
    ids = [submit(project, f"doc-{number}.md").id for number in range(55)]
    newest_first = sorted(ids, reverse=True)
    base = f"http://testserver/api/v1/projects/{project.id}/documents/"

    first = api.get(f"/api/v1/projects/{project.id}/documents/").json()
    second = api.get(f"/api/v1/projects/{project.id}/documents/?page=2").json()
    filtered = api.get(f"/api/v1/projects/{project.id}/documents/?status=pending&page=2").json()

    assert (first["count"], first["next"], first["previous"]) == (55, f"{base}?page=2", None)
    assert (second["count"], second["next"], second["previous"]) == (55, None, base)
    assert [row["id"] for row in first["results"] + second["results"]] == newest_first
    assert filtered["previous"] == f"{base}?status=pending"
    assert [row["id"] for row in filtered["results"]] == newest_first[50:]
    assert api.get(f"/api/v1/projects/{project.id}/documents/?page=3").status_code == 404
