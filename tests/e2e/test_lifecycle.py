"""Retry, reindex, cancel and admission, end to end with a real worker."""

import pytest

from documents import services
from documents.models import Chunk, Document
from jobs.models import Job
from tests.support import embedders
from tests.support.factories import make_project, markdown_document, replace_stored_bytes, submit_bytes
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

POISONED = "tests.support.embedders.PoisonEmbedder"
RECORDING = "tests.support.embedders.RecordingEmbedder"


@pytest.fixture(autouse=True)
def clean_provider():
    embedders.reset_calls()
    embedders.cure_poison(False)
    yield
    embedders.cure_poison(False)


def wait_job(job_id, timeout=90):
    return wait_until(
        lambda: (job := Job.objects.get(id=job_id)).status in Job.FINAL_STATUSES and job,
        timeout=timeout,
        message=f"job {job_id} final",
    )


def test_retry_requeues_only_failed_chunks_and_rederives_the_status(worker):
    project = make_project(embedder=POISONED)
    submission = submit_bytes(project, markdown_document(sections=4, poison_at=1), "poisoned.md")
    wait_job(submission.job.id)
    document = Document.objects.get(id=submission.document.id)
    assert document.status == "partial"
    ready_before = {chunk.id: chunk.updated_at for chunk in Chunk.objects.filter(document=document, status="ready")}
    failed_id = Chunk.objects.get(document=document, status="error").id

    embedders.cure_poison()
    embedders.reset_calls()
    job = services.document_retry_failed(document=document)
    job = wait_job(job.id)

    document.refresh_from_db()
    assert job.kind == "retry_chunks" and job.status == "completed"
    assert document.status == "ready"
    assert Chunk.objects.get(id=failed_id).status == "ready"
    # Ready chunks were not touched and not embedded again.
    after = {chunk.id: chunk.updated_at for chunk in Chunk.objects.filter(id__in=ready_before)}
    assert after == ready_before
    assert len(embedders.recorded_calls()) == 1


def test_reindex_of_an_unchanged_document_makes_no_provider_call(worker):
    project = make_project(embedder=RECORDING)
    submission = submit_bytes(project, markdown_document(sections=6), "stable.md")
    wait_job(submission.job.id)
    document = Document.objects.get(id=submission.document.id)
    vectors = dict(Chunk.objects.filter(document=document).values_list("id", "content_sha256"))
    embedders.reset_calls()

    job = wait_job(services.document_reindex(document=document).id)

    document.refresh_from_db()
    assert job.status == "completed" and job.progress_percentage == 100
    assert document.status == "ready"
    assert embedders.recorded_calls() == []
    assert dict(Chunk.objects.filter(document=document).values_list("id", "content_sha256")) == vectors


def test_reindex_keeps_unchanged_chunks_and_embeds_only_new_text(worker):
    project = make_project(embedder=RECORDING)
    submission = submit_bytes(project, markdown_document(sections=5), "evolving.md")
    wait_job(submission.job.id)
    document = Document.objects.get(id=submission.document.id)
    kept = set(Chunk.objects.filter(document=document).values_list("id", flat=True))

    # The stored file changes under the same document (an edited source).
    with document.file.open("rb") as handle:
        original = handle.read()
    replace_stored_bytes(document, original + b"\n## Appendix\n\nA brand new appendix about estuaries and tides.\n")
    embedders.reset_calls()
    job = wait_job(services.document_reindex(document=document).id)

    document.refresh_from_db()
    assert job.status == "completed"
    assert document.status == "ready"
    now = set(Chunk.objects.filter(document=document).values_list("id", flat=True))
    assert kept <= now
    calls = embedders.recorded_calls()
    assert len(calls) == len(now - kept) >= 1
    assert all("appendix" in text.lower() for _, text in calls)
    positions = list(Chunk.objects.filter(document=document).order_by("position").values_list("position", flat=True))
    assert positions == list(range(len(positions)))


def test_jobs_over_the_concurrency_limit_wait_pending_and_all_finish(worker, settings):
    limit = settings.MIRAGE_MAX_CONCURRENT_INDEXING_JOBS
    project = make_project()
    submissions, waited, most_running = [], 0, 0
    for i in range(limit + 3):
        submission = submit_bytes(project, markdown_document(sections=2) + f"\n{i}\n".encode(), f"d{i}.md")
        submissions.append(submission)
        waited += Job.objects.get(id=submission.job.id).status == "pending"
        most_running = max(most_running, Job.objects.filter(status="running").count())

    for submission in submissions:
        assert wait_job(submission.job.id).status == "completed"
    assert most_running <= limit
    assert waited >= 1
    started = [Job.objects.get(id=s.job.id).started_at for s in submissions]
    assert started == sorted(started)


def test_cancel_of_a_running_job_cancels_the_document(worker):
    project = make_project()
    submission = submit_bytes(project, markdown_document(sections=3), "c.md")
    from jobs.services import job_cancel

    job = job_cancel(job_id=submission.job.id)
    assert job.status == "cancelled" and job.cancelled_at is not None
    document = Document.objects.get(id=submission.document.id)
    assert document.status == "cancelled"
    # A late parse or embed for the cancelled run changes nothing.
    wait_until(lambda: not Chunk.objects.filter(document=document, status="processing").exists(), timeout=30)
    document.refresh_from_db()
    assert document.status == "cancelled"


def test_retry_after_a_cancel_finishes_the_chunks_the_cancel_left(worker, monkeypatch):
    from jobs.services import job_cancel

    monkeypatch.setenv("MIRAGE_TEST_EMBED_DELAY", "0.05")
    project = make_project(embedder=RECORDING)
    submission = submit_bytes(project, markdown_document(sections=40), "long.md")
    document = submission.document
    wait_until(lambda: Chunk.objects.filter(document=document, status="ready").count() >= 3, timeout=60)
    job_cancel(job_id=submission.job.id)
    wait_until(lambda: not Chunk.objects.filter(document=document, status="processing").exists(), timeout=30)
    document.refresh_from_db()
    assert document.status == "cancelled"
    left = Chunk.objects.filter(document=document).exclude(status="ready").count()
    assert left > 0

    monkeypatch.setenv("MIRAGE_TEST_EMBED_DELAY", "0")
    job = wait_job(services.document_retry_failed(document=document).id)

    document.refresh_from_db()
    # Messages of the cancelled run still queued may take a chunk or two once
    # the document is indexing again; the retry queues the rest.
    assert job.status == "completed" and 0 < job.chunks_created <= left
    assert document.status == "ready"
    assert not Chunk.objects.filter(document=document).exclude(status="ready").exists()
