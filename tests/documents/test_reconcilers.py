"""The repairs the beat reconcilers and `mirage_check --repair` make."""

from datetime import timedelta

import pytest
from celery.signals import before_task_publish
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from documents import events, invariants, services
from documents.models import Chunk, Document
from jobs.models import Job
from tests.support.events import stream
from tests.support.factories import make_project, markdown_document, submit_bytes

pytestmark = [pytest.mark.unit, pytest.mark.django_db]

VECTOR = [0.1] * 384


@pytest.fixture
def published():
    sent = []

    def record(sender=None, body=None, **kwargs):
        sent.append((sender, list(body[0])))

    before_task_publish.connect(record, weak=False)
    yield sent
    before_task_publish.disconnect(record)


def indexing_document(statuses, *, lease_expired=False, attempts=1):
    """A document mid-run whose chunks have the given statuses."""
    project = make_project()
    submission = submit_bytes(project, markdown_document(), "doc.md")
    document = submission.document
    Job.objects.filter(id=submission.job.id).update(
        status="running", started_at=timezone.now(), chunks_created=len(statuses)
    )
    now = timezone.now()
    Document.objects.filter(id=document.id).update(status="indexing", generation=1, parsing_finished_at=now)
    chunks = []
    for position, status in enumerate(statuses):
        chunks.append(
            Chunk(
                document=document,
                position=position,
                content=f"text {position}",
                content_sha256=str(position),
                status=status,
                attempts=attempts,
                embedding=VECTOR if status in ("ready", "corrupted") else None,
                embedding_model="hash-384" if status in ("ready", "corrupted") else "",
                lease_expires_at=now - timedelta(seconds=60)
                if lease_expired and status == "processing"
                else (now + timedelta(seconds=60) if status == "processing" else None),
                dispatched_at=now,
            )
        )
    Chunk.objects.bulk_create(chunks)
    document.refresh_from_db()
    return document, submission.job


def test_lost_chord_callback_is_finalized_once_even_on_two_ticks():
    document, job = indexing_document(["ready", "ready", "error"])
    assert invariants.find_violations(grace_seconds=-1)  # reported before the repair

    assert services.documents_finalize_settled() == [document.id]
    assert services.documents_finalize_settled() == []

    document.refresh_from_db()
    job.refresh_from_db()
    assert document.status == "partial"
    assert (job.status, job.chunks_failed, job.progress_percentage) == ("completed", 1, 100)


def test_documents_with_chunks_in_flight_are_left_alone():
    document, _ = indexing_document(["ready", "pending", "processing"])
    assert services.documents_finalize_settled() == []
    document.refresh_from_db()
    assert document.status == "indexing"


def test_chunk_past_its_lease_goes_back_to_pending_and_is_dispatched_again(
    published, django_capture_on_commit_callbacks
):
    document, _ = indexing_document(["ready", "processing"], lease_expired=True)
    stuck = Chunk.objects.get(document=document, status="processing")

    with django_capture_on_commit_callbacks(execute=True):
        report = services.chunks_redispatch_stuck()

    assert report["lease_expired"] == 1
    stuck.refresh_from_db()
    assert stuck.status == "pending"
    assert ("documents.embed_chunk", [stuck.id]) in published


def test_chunk_out_of_attempts_ends_error_with_the_reason(settings):
    settings.MIRAGE_CHUNK_MAX_ATTEMPTS = 3
    document, _ = indexing_document(["ready", "processing"], lease_expired=True, attempts=3)
    report = services.chunks_redispatch_stuck()
    assert report["gave_up"] == 1
    chunk = Chunk.objects.get(document=document, position=1)
    assert chunk.status == "error"
    assert "lease" in chunk.error


def test_pending_chunks_whose_messages_were_lost_are_dispatched_again(published, django_capture_on_commit_callbacks):
    document, _ = indexing_document(["pending", "pending"])
    # No dispatch marker exists for this run: the broker lost it (or never had it).
    with django_capture_on_commit_callbacks(execute=True):
        report = services.chunks_redispatch_stuck()
    assert report["pending_lost"] == 2
    assert sorted(args[0] for name, args in published if name == "documents.embed_chunk") == sorted(
        Chunk.objects.filter(document=document).values_list("id", flat=True)
    )
    # The marker is written again, so the next tick does not send them twice.
    published.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert services.chunks_redispatch_stuck()["pending_lost"] == 0


def test_chunks_inserted_early_in_a_long_parse_are_not_sent_again_when_it_commits(settings):
    document, _ = indexing_document(["pending", "pending"])
    events.mark_dispatched(document_id=document.id, generation=document.generation)
    lease = timedelta(seconds=settings.MIRAGE_CHUNK_LEASE_SECONDS)
    # Inserted at the start of the parse, sent when it committed just now.
    Chunk.objects.filter(document=document).update(dispatched_at=timezone.now() - 10 * lease)
    assert services.chunks_redispatch_stuck()["pending_lost"] == 0

    Document.objects.filter(id=document.id).update(parsing_finished_at=timezone.now() - 2 * lease)
    assert services.chunks_redispatch_stuck()["pending_lost"] == 2


def test_pending_document_without_a_live_job_is_failed_with_a_reason():
    project = make_project()
    submission = submit_bytes(project, markdown_document(), "orphan.md")
    Job.objects.filter(id=submission.job.id).update(status="failed")
    report = services.documents_redispatch_unparsed()
    assert report["never_dispatched_failed"] == 1
    document = Document.objects.get(id=submission.document.id)
    assert document.status == "error"
    assert "never dispatched" in document.error_message


def test_lost_parse_is_dispatched_again_then_failed_after_the_limit(
    settings, published, django_capture_on_commit_callbacks
):
    settings.MIRAGE_MAX_DISPATCH_ATTEMPTS = 1
    project = make_project()
    submission = submit_bytes(project, markdown_document(), "lost.md")
    Job.objects.filter(id=submission.job.id).update(
        status="running", started_at=timezone.now() - timedelta(seconds=settings.MIRAGE_DISPATCH_GRACE_SECONDS + 5)
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert services.documents_redispatch_unparsed()["parse_resent"] == 1
    assert ("documents.parse_document", [submission.document.id, submission.job.id]) in published

    assert services.documents_redispatch_unparsed()["never_dispatched_failed"] == 1
    job = Job.objects.get(id=submission.job.id)
    assert (job.status, job.error_type) == ("failed", "dispatch_lost")
    assert Document.objects.get(id=submission.document.id).status == "error"


def test_timed_out_job_fails_its_document_and_chunks(settings):
    from jobs.services import jobs_fail_timed_out

    document, job = indexing_document(["ready", "pending"])
    Job.objects.filter(id=job.id).update(started_at=timezone.now() - timedelta(hours=3))
    settings.MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS = 3600
    assert jobs_fail_timed_out() == [job.id]
    document.refresh_from_db()
    # The chunk embedded before the timeout stays usable; the document says so.
    assert document.status == "partial"
    assert "MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS" in document.error_message
    assert Chunk.objects.get(document=document, position=1).status == "error"
    assert Job.objects.get(id=job.id).error_type == "timeout"
    assert invariants.find_violations(grace_seconds=0) == []


def test_mirage_check_reports_then_repairs(capsys):
    document, _ = indexing_document(["ready", "ready"])
    Document.objects.filter(id=document.id).update(updated_at=timezone.now() - timedelta(minutes=5))
    Chunk.objects.filter(document=document).update(updated_at=timezone.now() - timedelta(minutes=5))

    with pytest.raises(CommandError, match="1 violation"):
        call_command("mirage_check")
    assert "not_finalized" in capsys.readouterr().out

    call_command("mirage_check", "--repair")
    assert "all repaired" in capsys.readouterr().out
    document.refresh_from_db()
    assert document.status == "ready"


def test_a_ready_document_with_a_failed_chunk_is_reported_and_rederived():
    document, job = indexing_document(["ready", "error"])
    Document.objects.filter(id=document.id).update(status="ready")
    kinds = {violation.kind for violation in invariants.find_violations(grace_seconds=0)}
    assert "status_disagrees" in kinds
    assert services.documents_rederive_disagreeing() == [document.id]
    document.refresh_from_db()
    assert document.status == "partial"


def test_a_run_ended_by_a_process_that_died_before_its_after_commit_work_is_ended_by_the_reconciler(
    redis_client, django_capture_on_commit_callbacks
):
    from common import events as common_events
    from jobs import events as job_events

    document, job = indexing_document(["ready", "ready", "pending"])
    generation = document.generation
    events.mark_dispatched(document_id=document.id, generation=generation)
    job_events.publish_job(Job.objects.get(id=job.id))  # `running`, its rank kept for days
    job_rank = common_events.rank_key(f"job:{job.id}")
    assert redis_client.ttl(job_rank) > common_events.FINISHED_RANK_TTL_SECONDS
    # The run goes on: the reconciler leaves it alone (runs other tests
    # left in Redis may be ended here).
    assert document.id not in services.lost_run_ends()
    assert (document.id, generation) in events.dispatched_runs()

    # The last chunk finishes and the run is finalised, but the process
    # dies between the commit and its after-commit work: no status event,
    # the run's keys stay.
    Chunk.objects.filter(document=document, status="pending").update(status="ready", embedding=VECTOR)
    with django_capture_on_commit_callbacks(execute=False) as lost:
        assert services.document_finalize(document_id=document.id) == "ready"
    assert lost  # publishing and forgetting were left to after the commit
    assert redis_client.exists(events._marker(document.id, generation)) == 1
    published_before = stream(document.project_id)

    # Within the grace period its own process may still be at it.
    assert document.id not in services.lost_run_ends()
    later = timezone.now() + timedelta(seconds=services.repairs.LOST_RUN_END_GRACE_SECONDS + 1)
    assert document.id in services.lost_run_ends(now=later)

    new_events = stream(document.project_id)[len(published_before) :]
    assert ("document.status", "ready") in [(event, data["status"]) for event, data in new_events]
    assert ("job.progress", "completed") in [(event, data["status"]) for event, data in new_events]
    assert redis_client.exists(events._marker(document.id, generation)) == 0
    assert (document.id, generation) not in events.dispatched_runs()
    assert 0 < redis_client.ttl(job_rank) <= common_events.FINISHED_RANK_TTL_SECONDS
    # Once is enough: the next tick finds nothing.
    assert document.id not in services.lost_run_ends(now=later)


def test_a_cancelled_or_deleted_run_is_forgotten_without_a_status_event(
    redis_client, django_capture_on_commit_callbacks
):
    from jobs import services as job_services

    cancelled, job = indexing_document(["ready", "processing"])
    events.mark_dispatched(document_id=cancelled.id, generation=cancelled.generation)
    with django_capture_on_commit_callbacks(execute=True):
        assert job_services.job_cancel(job_id=job.id, actor="test")
    assert Document.objects.get(id=cancelled.id).status == "cancelled"
    assert (cancelled.id, cancelled.generation) not in events.dispatched_runs()
    assert redis_client.exists(events._marker(cancelled.id, cancelled.generation)) == 0

    # A run whose document is gone (or began another run) is only forgotten.
    deleted, _ = indexing_document(["ready"])
    events.mark_dispatched(document_id=deleted.id, generation=deleted.generation)
    project_id = deleted.project_id
    Document.objects.filter(id=deleted.id).delete()
    before = stream(project_id)
    assert deleted.id in services.lost_run_ends()
    assert stream(project_id) == before
    assert (deleted.id, deleted.generation) not in events.dispatched_runs()
