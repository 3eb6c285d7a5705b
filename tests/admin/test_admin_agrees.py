"""The admin agrees with itself (issue 12): the document page shows one
progress, its job panel included; the Chunks panel says why it is empty;
buttons appear only where their action can apply; the lists name each
job's file and project, and say why a document failed."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from documents import jobkinds
from documents.models import Document
from documents.services.transitions import document_transition
from jobs import services as job_services
from jobs.models import Job
from tests.admin.operators import make_operator
from tests.admin.test_admin import (
    DOCUMENT_PROGRESS,
    DOCUMENTS,
    JOBS,
    message_texts,
    new_document,
    run_action,
)
from tests.support.factories import make_project

pytestmark = [pytest.mark.unit, pytest.mark.django_db]

PARSE_ERROR = "could not read the PDF: the file ends before its cross-reference table (truncated upload?)"


@pytest.fixture
def operator_client(client):
    client.force_login(make_operator())
    return client


def page_of(document: Document) -> str:
    return reverse("admin:documents_document_change", args=[document.id])


def start_run(document: Document) -> None:
    """The document's job admitted and its run begun, as a worker leaves them."""
    job_services.jobs_admit_pending()
    document_transition(
        document_id=document.id,
        from_statuses=Document.Status.PENDING,
        to=Document.Status.INDEXING,
        actor="worker",
        reason="parsing",
    )


def fail_run(document: Document, message: str = PARSE_ERROR) -> None:
    start_run(document)
    document_transition(
        document_id=document.id,
        from_statuses=Document.Status.INDEXING,
        to=Document.Status.ERROR,
        actor="worker",
        reason="parse failed",
        error_message=message,
    )
    job_services.job_fail(job_id=document.current_job_id, error_type="parse_error", error_message=message)


def finish_run(document: Document, status: str = Document.Status.READY) -> None:
    start_run(document)
    document_transition(
        document_id=document.id,
        from_statuses=Document.Status.INDEXING,
        to=status,
        actor="worker",
        reason="embedded",
        indexed_at=timezone.now(),
    )
    job_services.job_complete(job_id=document.current_job_id, message="finished")


def button_actions(content: str) -> list[str]:
    """The admin actions the page's object tools offer as buttons."""
    tools = re.search(r'<ul class="object-tools".*?</ul>', content, re.S).group(0)
    return re.findall(r'name="action" value="([a-z_]+)"', tools)


# --- One progress on the document page ----------------------------------------------


def test_job_panel_shows_the_documents_progress_not_the_job_rows_own(operator_client):
    document = new_document(make_project(), "halfway", ("ready", "ready", "processing", "pending"))
    start_run(document)
    # The job row's own figure, counted another way, as a worker writes it.
    job_services.job_set_progress(job_id=document.current_job_id, percentage=18, message="embedding 1/4 chunks")

    response = operator_client.get(page_of(document))
    feed = operator_client.get(f"{DOCUMENT_PROGRESS}?ids={document.id}").json()["items"][str(document.id)]

    content = response.content.decode()
    panel = re.search(r'id="mirage-job".*?</fieldset>', content, re.S).group(0)
    assert "2/4 chunks · 50%" in panel
    assert 'aria-valuenow="50"' in panel
    assert "18%" not in content and "1/4 chunks" not in content
    assert "embedding 2/4 chunks" in panel
    assert (
        (feed["job"]["percent"], feed["job"]["label"]) == (feed["percent"], feed["label"]) == (50, "2/4 chunks · 50%")
    )
    assert feed["job"]["status"] == "running"


def test_feed_is_not_final_while_the_documents_job_still_runs(operator_client):
    document = new_document(make_project(), "closing", ("ready",))
    start_run(document)
    document_transition(
        document_id=document.id,
        from_statuses=Document.Status.INDEXING,
        to=Document.Status.READY,
        actor="worker",
        reason="embedded",
        indexed_at=timezone.now(),
    )

    item = operator_client.get(f"{DOCUMENT_PROGRESS}?ids={document.id}").json()["items"][str(document.id)]

    assert (item["status"], item["job"]["status"], item["final"]) == ("ready", "running", False)


def test_every_panel_of_the_page_is_redrawn_when_the_document_moves_on(operator_client):
    document = new_document(make_project(), "moving", ("ready", "processing"))
    start_run(document)
    before = operator_client.get(page_of(document)).content.decode()
    key_before = operator_client.get(f"{DOCUMENT_PROGRESS}?ids={document.id}").json()["items"][str(document.id)][
        "refresh_key"
    ]

    panels = re.findall(r'id="([a-z-]+)"[^>]*data-live-role="refresh" data-live-version="([^"]*)"', before)
    assert {panel for panel, _ in panels} == {"mirage-document-tools", "mirage-timeline", "mirage-job", "chunks"}
    assert {version for _, version in panels} == {key_before}

    document_transition(
        document_id=document.id,
        from_statuses=Document.Status.INDEXING,
        to=Document.Status.ERROR,
        actor="worker",
        reason="embedding failed",
        error_message="1/2 chunks failed",
    )
    job_services.job_fail(
        job_id=document.current_job_id, error_type="embedding_failed", error_message="1/2 chunks failed"
    )
    item = operator_client.get(f"{DOCUMENT_PROGRESS}?ids={document.id}").json()["items"][str(document.id)]

    assert item["refresh_key"] != key_before
    assert (item["final"], item["job"]["status"], item["job"]["fields"]["message"]) == (
        True,
        "failed",
        "1/2 chunks failed",
    )


# --- The Chunks panel says why it is empty -------------------------------------------------


def test_failed_document_without_chunks_says_why_instead_of_waiting_for_parsing(operator_client):
    document = new_document(make_project(), "broken")
    fail_run(document)

    content = operator_client.get(page_of(document)).content.decode()

    chunks = re.search(r'id="chunks".*?</fieldset>', content, re.S).group(0)
    assert f"No chunks: the document ended error: {PARSE_ERROR}" in chunks
    assert "reload" not in chunks and "yet" not in chunks


def test_cancelled_document_without_chunks_says_it_was_cancelled(operator_client):
    document = new_document(make_project(), "stopped")
    run_action(operator_client, DOCUMENTS, "cancel_documents", [document.id])

    content = operator_client.get(page_of(document)).content.decode()

    chunks = re.search(r'id="chunks".*?</fieldset>', content, re.S).group(0)
    assert "No chunks: the document ended cancelled" in chunks
    assert "reload once parsing" not in chunks


def test_chunk_filter_with_no_match_does_not_claim_there_are_no_chunks_yet(operator_client):
    document = new_document(make_project(), "counted", ("ready", "ready"))

    content = operator_client.get(page_of(document) + "?chunk_status=error").content.decode()

    chunks = re.search(r'id="chunks".*?</fieldset>', content, re.S).group(0)
    assert "No chunk in status error." in chunks
    assert "yet" not in chunks


def test_document_still_parsing_says_the_list_fills_in_by_itself(operator_client):
    document = new_document(make_project(), "parsing")
    start_run(document)

    content = operator_client.get(page_of(document)).content.decode()

    assert "the file is being parsed; this list fills in when parsing has finished" in content
    assert "reload" not in re.search(r'id="chunks".*?</fieldset>', content, re.S).group(0)


# --- Buttons only where they apply ---------------------------------------------------------


def test_running_document_offers_cancel_only(operator_client):
    document = new_document(make_project(), "running", ("ready", "error"))
    start_run(document)

    assert button_actions(operator_client.get(page_of(document)).content.decode()) == ["cancel_documents"]


def test_ready_document_offers_reindex_only(operator_client):
    document = new_document(make_project(), "done", ("ready", "ready"))
    finish_run(document)

    assert button_actions(operator_client.get(page_of(document)).content.decode()) == ["reindex_documents"]


def test_document_with_failed_chunks_offers_retry_and_reindex(operator_client):
    document = new_document(make_project(), "partly", ("ready", "error"))
    finish_run(document, status=Document.Status.PARTIAL)

    assert button_actions(operator_client.get(page_of(document)).content.decode()) == [
        "retry_failed_chunks",
        "reindex_documents",
    ]


def test_cancelled_document_offers_retry_of_the_chunks_it_left_pending(operator_client):
    document = new_document(make_project(), "halted", ("ready", "pending"))
    job_services.job_cancel(job_id=document.current_job_id)

    assert button_actions(operator_client.get(page_of(document)).content.decode()) == [
        "retry_failed_chunks",
        "reindex_documents",
    ]


def test_truncated_chunks_are_offered_their_own_retry_and_it_works(operator_client):
    document = new_document(make_project(), "truncated", ("ready", "corrupted"))
    finish_run(document, status=Document.Status.PARTIAL)

    offered = button_actions(operator_client.get(page_of(document)).content.decode())
    response = run_action(operator_client, DOCUMENTS, "retry_failed_and_truncated_chunks", [document.id])

    assert offered == ["retry_failed_and_truncated_chunks", "reindex_documents"]
    retry = Job.objects.get(subject_id=document.id, kind=jobkinds.RETRY_CHUNKS)
    assert retry.metadata["include_corrupted"] is True
    assert "Queued a retry of failed and truncated chunks for 1 document." in message_texts(response)


def test_changelist_retry_names_each_document_it_does_not_apply_to(operator_client):
    project = make_project()
    ready = new_document(project, "all-good", ("ready",))
    finish_run(ready)
    failed = new_document(project, "has-errors", ("ready", "error"))
    job_services.job_cancel(job_id=failed.current_job_id)

    response = run_action(operator_client, DOCUMENTS, "retry_failed_chunks", [ready.id, failed.id])

    texts = message_texts(response)
    assert any(text.startswith("all-good.md: ") and "no chunk to retry" in text for text in texts)
    assert "Queued a retry of failed chunks for 1 document." in texts
    assert not Job.objects.filter(subject_id=ready.id, kind=jobkinds.RETRY_CHUNKS).exists()


# --- The lists -----------------------------------------------------------------------------


def test_documents_list_says_why_a_document_failed(operator_client):
    project = make_project()
    failed = new_document(project, "broken")
    fail_run(failed, message="could not read the PDF: " + "the cross-reference table is damaged " * 5)
    new_document(project, "waiting")

    content = operator_client.get(DOCUMENTS).content.decode()

    cells = re.findall(r'<td class="field-error_summary">(.*?)</td>', content, re.S)
    assert len(cells) == 2
    (shown,) = [cell for cell in cells if "could not" in cell]
    assert "could not read the PDF: the cross-reference" in shown
    assert "…" in shown  # shortened; the whole message is in its title
    assert 'title="could not read the PDF: the cross-reference table is damaged' in shown


def test_jobs_list_names_kind_file_and_project_of_each_job(operator_client):
    new_document(make_project(name="Rivers"), "field-guide")
    reindexed = new_document(make_project(name="Lakes"), "survey")
    job_services.job_cancel(job_id=reindexed.current_job_id)
    run_action(operator_client, DOCUMENTS, "reindex_documents", [reindexed.id])

    content = operator_client.get(JOBS).content.decode()

    table = content.split('id="result_list"')[1].split("</table>")[0]
    rows = [" ".join(re.sub(r"<[^>]+>", " ", row).split()) for row in re.findall(r"<tr>.*?</tr>", table, re.S)]
    assert any("Index a document field-guide.md Rivers" in row for row in rows), rows
    assert any("Reindex a document survey.md Lakes" in row for row in rows), rows
    assert any("Index a document survey.md Lakes" in row for row in rows), rows
    assert not any("index_document" in row for row in rows)


def test_single_document_jobs_do_not_count_files(operator_client):
    document = new_document(make_project(), "single")

    content = operator_client.get(JOBS).content.decode()
    job_page = operator_client.get(reverse("admin:jobs_job_change", args=[document.current_job_id]))

    assert "scanned" not in content and "indexed</span>" not in content
    assert "Files scanned" not in job_page.content.decode()


def test_import_jobs_count_their_files(operator_client):
    project = make_project(name="Imports")
    job = job_services.job_create(
        kind=jobkinds.IMPORT_DIRECTORY, project_id=project.id, metadata={"path": "/srv/import/manuals"}
    )

    content = operator_client.get(JOBS).content.decode()
    job_page = operator_client.get(reverse("admin:jobs_job_change", args=[job.id])).content.decode()

    assert "0 files scanned" in re.sub(r"<[^>]+>", "", content)
    assert "/srv/import/manuals" in content and "Import a directory" in content and "Imports" in content
    assert "Files scanned" in job_page


def test_jobs_list_shows_date_and_time(operator_client):
    new_document(make_project(), "timed")

    content = operator_client.get(JOBS).content.decode()

    times = re.search(r'<td class="field-times_live">(.*?)</td>', content, re.S).group(1)
    text = " ".join(re.sub(r"<[^>]+>", " ", times).split())
    assert re.fullmatch(r"\d{4}-\d\d-\d\d created \d\d:\d\d:\d\d started - completed -", text), text


def test_jobs_list_costs_the_same_queries_for_5_and_30_projects(operator_client):
    for index in range(5):
        new_document(make_project(name=f"project-{index}"), f"job-{index}")
    operator_client.get(JOBS)
    with CaptureQueriesContext(connection) as five:
        assert operator_client.get(JOBS).status_code == 200
    for index in range(5, 30):
        new_document(make_project(name=f"project-{index}"), f"job-{index}")
    with CaptureQueriesContext(connection) as thirty:
        response = operator_client.get(JOBS)

    assert "project-29" in response.content.decode()
    assert len(thirty) == len(five), [query["sql"] for query in thirty.captured_queries]


def test_job_page_offers_cancel_only_while_the_job_is_active(operator_client):
    running = new_document(make_project(), "running-job")
    start_run(running)
    finished = new_document(make_project(), "finished-job")
    finish_run(finished)

    def buttons(document: Document) -> list[str]:
        page = operator_client.get(reverse("admin:jobs_job_change", args=[document.current_job_id]))
        return button_actions(page.content.decode())

    assert buttons(running) == ["cancel_jobs"]
    assert buttons(finished) == []
