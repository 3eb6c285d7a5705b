"""The operator's commands: docstatus, jobs and healthcheck."""

import re
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings

from documents.models import Chunk, Document, Project
from jobs import services as job_services
from jobs.models import Job
from tests.support.factories import make_project, markdown_document, submit_bytes
from tests.support.processes import free_port

pytestmark = [pytest.mark.unit, pytest.mark.django_db]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def add_chunks(document: Document, statuses: list[str]) -> None:
    for position, status in enumerate(statuses):
        embedded = status in (Chunk.Status.READY, Chunk.Status.CORRUPTED)
        Chunk.objects.create(
            document=document,
            position=position,
            content=f"chunk {position}",
            content_sha256=f"{document.id}-{position}",
            status=status,
            embedding=[0.1, 0.2, 0.3] if embedded else None,
        )


@pytest.fixture
def indexing_document():
    project = make_project(name="rivers")
    submission = submit_bytes(project, markdown_document(sections=2), "guide-to-rivers.md")
    Document.objects.filter(id=submission.document.id).update(status=Document.Status.INDEXING)
    add_chunks(submission.document, ["ready"] * 40 + ["error"] * 2 + ["pending"] * 58)
    return submission


def rows(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines()]


# --- docstatus ------------------------------------------------------------------


def test_docstatus_shows_progress_failed_chunks_and_current_job(indexing_document):
    output = run("docstatus")

    header, row = rows(output)
    assert header == [
        "ID",
        "PROJECT",
        "FILENAME",
        "TYPE",
        "STATUS",
        "PROGRESS",
        "FAILED",
        "WAITED",
        "WORKED",
        "ETA",
        "JOB",
    ]
    document, job = indexing_document.document, indexing_document.job
    assert row[:8] == [str(document.id), "rivers", "guide-to-rivers.md", "markdown", "indexing", "42/100", "(42%)", "2"]
    waited, worked, eta = row[8:11]
    assert re.fullmatch(r"\d+s", waited) and (worked, eta) == ("-", "-")
    assert row[11:] == [str(job.id), "pending", "(0", "ahead)"]


def test_docstatus_reads_every_document_in_one_query(indexing_document, django_assert_num_queries):
    other = make_project(name="lakes")
    for number in range(3):
        submit_bytes(other, markdown_document(sections=number + 1), f"lake-{number}.md")

    # One for the documents (whatever their number), one for the pauses in force.
    with django_assert_num_queries(2):
        output = run("docstatus")

    assert len(output.splitlines()) == 1 + 4


def test_docstatus_filters_by_project_and_refuses_an_unknown_one(indexing_document):
    other = make_project(name="lakes")
    submit_bytes(other, markdown_document(sections=5), "lake.md")

    output = run("docstatus", "--project", "lakes")
    assert "lake.md" in output and "guide-to-rivers.md" not in output
    assert "0/0 (0%)" in output

    empty = make_project(name="empty")
    assert run("docstatus", "--project", empty.name).strip() == "no documents"
    with pytest.raises(CommandError, match="no project named 'oceans'"):
        run("docstatus", "--project", "oceans")


def test_docstatus_shows_ready_documents_at_100_percent(indexing_document):
    document = indexing_document.document
    Chunk.objects.filter(document=document).update(status=Chunk.Status.READY, embedding=[0.1, 0.2, 0.3])
    Document.objects.filter(id=document.id).update(status=Document.Status.READY)

    assert "100/100 (100%)" in run("docstatus")


# --- jobs ------------------------------------------------------------------------


def test_jobs_lists_newest_first_with_progress_and_counters(indexing_document):
    project = indexing_document.document.project
    second = submit_bytes(project, markdown_document(sections=7), "second.md").job
    Job.objects.filter(id=second.id).update(
        progress_percentage=37, chunks_created=12, chunks_failed=1, progress_message="embedding 4/12 chunks"
    )

    output = run("jobs")

    header, *lines = output.splitlines()
    assert header.split() == ["ID", "KIND", "STATUS", "PROGRESS", "MESSAGE", "FILES", "CHUNKS", "FAILED", "CREATED"]
    assert [line.split()[0] for line in lines] == [str(second.id), str(indexing_document.job.id)]
    assert "37%" in lines[0] and "embedding 4/12 chunks" in lines[0]
    assert lines[0].split()[-4:-2] == ["12", "1"]


def test_jobs_filters_by_status_and_limits(indexing_document):
    project = indexing_document.document.project
    for number in range(3):
        submit_bytes(project, markdown_document(sections=number + 3), f"more-{number}.md")
    job_services.job_fail(job_id=indexing_document.job.id, error_type="parse_error", error_message="broken")

    failed = run("jobs", "--status", "failed").splitlines()
    assert len(failed) == 2 and failed[1].split()[0] == str(indexing_document.job.id)
    assert len(run("jobs", "--limit", "2").splitlines()) == 1 + 2
    assert run("jobs", "--status", "cancelled").strip() == "no jobs"


def test_jobs_cancel_stops_a_pending_job(indexing_document):
    job = indexing_document.job

    output = run("jobs", "--cancel", str(job.id))

    assert f"cancelled job {job.id}" in output
    assert Job.objects.get(id=job.id).status == Job.Status.CANCELLED


def test_jobs_cancel_of_a_finished_job_prints_why_and_fails(indexing_document):
    job = indexing_document.job
    job_services.job_fail(job_id=job.id, error_type="parse_error", error_message="broken")

    with pytest.raises(CommandError, match="already finished as failed") as refused:
        run("jobs", "--cancel", str(job.id))

    assert refused.value.returncode == 1
    assert Job.objects.get(id=job.id).status == Job.Status.FAILED
    with pytest.raises(CommandError, match="no job with id 999999"):
        run("jobs", "--cancel", "999999")


# --- healthcheck -------------------------------------------------------------------


def test_healthcheck_passes_when_database_redis_and_migrations_are_fine():
    output = run("healthcheck", "--migrations")

    assert output.splitlines() == ["database: ok", "redis: ok", "migrations: ok"]


def test_healthcheck_fails_with_the_reason_when_redis_does_not_answer():
    out = StringIO()
    with (
        override_settings(MIRAGE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"),
        pytest.raises(CommandError, match="unhealthy: redis") as failed,
    ):
        call_command("healthcheck", stdout=out)

    assert failed.value.returncode == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == "database: ok"
    assert lines[1].startswith("redis: FAILED") and "Connection refused" in lines[1]


def test_ingest_owner_makes_the_project_visible_to_that_user_and_says_so(tmp_path):
    from io import StringIO

    from django.core.management import call_command

    from tests.support.factories import make_user

    alice = make_user(username="alice-owner")
    (tmp_path / "notes.md").write_bytes(b"# Notes\n\nSome text worth indexing.\n")
    out = StringIO()
    call_command("ingest", str(tmp_path), project="shared-notes", embedder="hash", owner="alice-owner", stdout=out)
    project = Project.objects.get(name="shared-notes")
    assert project.owner == alice
    assert list(project.members.all()) == [alice]
    assert "visible through the API to: alice-owner" in out.getvalue()


def test_ingest_without_owner_says_only_staff_see_the_project(tmp_path):
    from io import StringIO

    from django.core.management import call_command

    (tmp_path / "notes.md").write_bytes(b"# Notes\n\nSome text worth indexing.\n")
    out = StringIO()
    call_command("ingest", str(tmp_path), project="ownerless", embedder="hash", stdout=out)
    assert "has no members: only staff see it" in out.getvalue()


def test_ingest_exits_3_when_a_file_is_refused_and_names_an_unknown_owner(tmp_path):
    from io import StringIO

    from django.core.management import call_command

    (tmp_path / "photo.md").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4)
    with pytest.raises(CommandError) as refused:
        call_command("ingest", str(tmp_path), project="refusals", embedder="hash", stdout=StringIO())
    assert refused.value.returncode == 3
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("ingest", str(tmp_path), project="refusals", owner="nobody", stdout=StringIO())
