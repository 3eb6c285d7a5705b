"""Pause and resume at the level of the services: what a pause stops, what
the reconcilers and timeouts leave alone, and what resume sends again."""

from datetime import timedelta

import pytest
from celery.signals import before_task_publish
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from common import pauses
from common.models import AuditEntry, Pause, StatusChange
from documents import services
from documents.models import Chunk, Document
from documents.services.pausing import PARSE_DEFERRED, PAUSED_SECONDS
from jobs.models import Job
from jobs.services import jobs_admit_pending, jobs_fail_timed_out
from tests.documents.test_reconcilers import indexing_document
from tests.support.factories import make_project, markdown_document, submit_bytes

pytestmark = [pytest.mark.unit, pytest.mark.django_db]

OPERATOR = "operator:7"


@pytest.fixture
def published():
    sent = []

    def record(sender=None, body=None, **kwargs):
        sent.append((sender, list(body[0])))

    before_task_publish.connect(record, weak=False)
    yield sent
    before_task_publish.disconnect(record)


def test_a_paused_project_claims_no_chunk_and_resume_sends_its_pending_chunks_again(
    published, django_capture_on_commit_callbacks
):
    document, _ = indexing_document(["ready", "pending", "pending"])
    services.project_pause(project=document.project, reason="provider quota", actor=OPERATOR)

    pending = list(Chunk.objects.filter(document=document, status="pending").order_by("position"))
    assert services.chunk_embed(chunk_id=pending[0].id).status == "skipped"
    assert Chunk.objects.get(id=pending[0].id).status == "pending"

    with django_capture_on_commit_callbacks(execute=True):
        services.project_resume(project=document.project, actor=OPERATOR)
    sent = [args[0] for task, args in published if task == "documents.embed_chunk"]
    assert sent == [chunk.id for chunk in pending]

    for chunk in pending:
        assert services.chunk_embed(chunk_id=chunk.id).status == "ready"
    # A second task for the same chunk (its old message) embeds nothing.
    assert services.chunk_embed(chunk_id=pending[0].id).status == "skipped"
    # The task that finished the last chunk finalised the document.
    assert Document.objects.get(id=document.id).status == "ready"


def test_a_deployment_pause_holds_every_project_and_outlasts_a_project_resume(published):
    document, _ = indexing_document(["pending"])
    chunk = Chunk.objects.get(document=document)
    services.deployment_pause(reason="database maintenance", actor=OPERATOR)
    services.project_pause(project=document.project, reason="and this one too", actor=OPERATOR)
    services.project_resume(project=document.project, actor=OPERATOR)

    assert services.chunk_embed(chunk_id=chunk.id).status == "skipped"
    held = pauses.pause_for_project(document.project_id)
    assert held is not None and held.reason == "database maintenance"
    services.deployment_resume(actor=OPERATOR)
    assert services.chunk_embed(chunk_id=chunk.id).status == "ready"


def test_pausing_twice_or_resuming_what_is_not_paused_is_refused_with_the_reason():
    project = make_project()
    services.project_pause(project=project, reason="first", actor=OPERATOR)
    with pytest.raises(pauses.AlreadyPaused, match="already paused since .*first"):
        services.project_pause(project=project, reason="second", actor=OPERATOR)
    services.project_resume(project=project, actor=OPERATOR)
    with pytest.raises(pauses.NotPaused, match="is not paused"):
        services.project_resume(project=project, actor=OPERATOR)
    with pytest.raises(pauses.NotPaused):
        services.deployment_resume(actor=OPERATOR)


def test_pause_and_resume_are_in_the_audit_log_and_the_history_of_active_work():
    document, job = indexing_document(["pending"])
    services.project_pause(project=document.project, reason="quota", actor=OPERATOR)
    services.project_resume(project=document.project, actor=OPERATOR, reason="quota raised")

    actions = list(AuditEntry.objects.filter(project_id=document.project_id).values_list("action", "actor"))
    assert ("project.paused", OPERATOR) in actions and ("project.resumed", OPERATOR) in actions
    reasons = list(
        StatusChange.objects.filter(entity="document", entity_id=document.id, actor=OPERATOR).values_list(
            "from_status", "to_status", "reason"
        )
    )
    assert ("indexing", "indexing", "project paused: quota") in reasons
    assert any(reason.startswith("project resumed: quota raised (paused") for _, _, reason in reasons)
    assert StatusChange.objects.filter(entity="job", entity_id=job.id, reason="project paused: quota").exists()
    pause = Pause.objects.get(project_id=document.project_id)
    assert pause.resumed_by == OPERATOR and pause.resumed_at is not None


def test_a_paused_projects_jobs_wait_in_admission_and_start_on_resume(settings, django_capture_on_commit_callbacks):
    settings.MIRAGE_MAX_CONCURRENT_INDEXING_JOBS = 5
    paused_project, other = make_project(), make_project()
    services.project_pause(project=paused_project, reason="hold", actor=OPERATOR)
    held = submit_bytes(paused_project, markdown_document(), "held.md").job
    free = submit_bytes(other, markdown_document(), "free.md").job

    assert jobs_admit_pending() == [free.id]
    assert Job.objects.get(id=held.id).status == "pending"
    with django_capture_on_commit_callbacks(execute=True):
        services.project_resume(project=paused_project, actor=OPERATOR)
    assert Job.objects.get(id=held.id).status == "running"


def test_a_parse_of_paused_work_is_deferred_and_sent_again_on_resume(published, django_capture_on_commit_callbacks):
    project = make_project()
    submission = submit_bytes(project, markdown_document(), "later.md")
    Job.objects.filter(id=submission.job.id).update(status="running", started_at=timezone.now())
    services.project_pause(project=project, reason="hold", actor=OPERATOR)

    services.document_parse(document_id=submission.document.id, job_id=submission.job.id)
    assert Document.objects.get(id=submission.document.id).status == "pending"
    job = Job.objects.get(id=submission.job.id)
    assert job.metadata[PARSE_DEFERRED] is True and job.progress_message == "paused: hold"
    assert not Chunk.objects.filter(document_id=submission.document.id).exists()

    with django_capture_on_commit_callbacks(execute=True):
        services.project_resume(project=project, actor=OPERATOR)
    assert ("documents.parse_document", [submission.document.id, submission.job.id]) in published
    assert PARSE_DEFERRED not in Job.objects.get(id=job.id).metadata
    services.document_parse(document_id=submission.document.id, job_id=submission.job.id)
    assert Document.objects.get(id=submission.document.id).status == "indexing"


def test_reconcilers_leave_paused_work_alone(settings, published, django_capture_on_commit_callbacks):
    document, job = indexing_document(["pending", "processing"], lease_expired=True)
    lease = timedelta(seconds=settings.MIRAGE_CHUNK_LEASE_SECONDS)
    Chunk.objects.filter(document=document).update(dispatched_at=timezone.now() - 10 * lease)
    Document.objects.filter(id=document.id).update(parsing_finished_at=timezone.now() - 10 * lease)
    services.project_pause(project=document.project, reason="hold", actor=OPERATOR)

    with django_capture_on_commit_callbacks(execute=True):
        report = services.chunks_redispatch_stuck()
        unparsed = services.documents_redispatch_unparsed()
    assert report == {"lease_expired": 0, "pending_lost": 0, "gave_up": 0, "window_restarted": 0}
    assert unparsed == {"parse_resent": 0, "never_dispatched_failed": 0}
    assert not [task for task, _ in published if task == "documents.embed_chunk"]

    services.project_resume(project=document.project, actor=OPERATOR)
    assert services.chunks_redispatch_stuck()["lease_expired"] == 1


def test_job_timeouts_do_not_run_while_paused_nor_count_the_paused_time(settings):
    settings.MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS = 3600
    document, job = indexing_document(["pending"])
    Job.objects.filter(id=job.id).update(started_at=timezone.now() - timedelta(minutes=150))
    services.project_pause(project=document.project, reason="hold", actor=OPERATOR)
    assert jobs_fail_timed_out() == []

    # Paused two of its two and a half hours: the job has run half an hour.
    Pause.objects.filter(project_id=document.project_id).update(paused_at=timezone.now() - timedelta(hours=2))
    services.project_resume(project=document.project, actor=OPERATOR)
    assert Job.objects.get(id=job.id).metadata[PAUSED_SECONDS] == pytest.approx(7200, abs=5)
    assert jobs_fail_timed_out() == []
    assert jobs_fail_timed_out(now=timezone.now() + timedelta(minutes=25)) == []
    assert jobs_fail_timed_out(now=timezone.now() + timedelta(minutes=31)) == [job.id]


def test_pause_and_resume_commands(capsys):
    project = make_project(name="cli-paused")
    call_command("pause", "--project", "cli-paused", "--reason", "night batch")
    assert "paused: the project was paused by operator:cli" in capsys.readouterr().out
    with pytest.raises(CommandError, match="already paused"):
        call_command("pause", "--project", "cli-paused", "--reason", "again")
    submit_bytes(project, markdown_document(), "waiting.md")
    call_command("docstatus", "--project", "cli-paused")
    out = capsys.readouterr().out
    assert "pending (paused)" in out and "night batch" in out
    call_command("resume", "--project", "cli-paused")
    assert "resumed project" in capsys.readouterr().out
    call_command("pause", "--all", "--reason", "upgrade")
    call_command("resume", "--all")
    with pytest.raises(CommandError, match="no project named"):
        call_command("pause", "--project", "nope", "--reason", "x")
