"""How document_parse stores a run's chunks: in batches while the file is
read, in one transaction, and only if the run is still the document's live
one when the file is done."""

from __future__ import annotations

import gc
import threading
import tracemalloc
import uuid

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection, transaction
from django.utils import timezone

from common.filestore.storage import local_path
from documents import services
from documents.models import Chunk, Document
from documents.parsers import ParseError
from documents.services import parsing
from jobs.models import Job
from jobs.services import job_cancel
from tests.support.factories import make_project, markdown_document, replace_stored_bytes, submit_bytes

pytestmark = [pytest.mark.unit, pytest.mark.django_db]


@pytest.fixture
def dispatched(monkeypatch):
    """The chords document_parse sends, as (chunk_ids, generation)."""
    sent = []
    monkeypatch.setattr(
        parsing,
        "dispatch_chord",
        lambda *, chunk_ids, document_id, generation, chord_id, priority="normal": sent.append((chunk_ids, generation)),
    )
    return sent


def running_index(content: bytes, filename: str = "guide.md", project=None) -> tuple[Document, Job]:
    submission = submit_bytes(project or make_project(), content, filename)
    return submission.document, _running(submission.job)


def running_reindex(document: Document) -> Job:
    return _running(services.document_reindex(document=document))


def _running(job: Job) -> Job:
    # Admission runs on commit, which these tests never reach.
    Job.objects.filter(id=job.id).update(status="running", started_at=timezone.now())
    return Job.objects.get(id=job.id)


def parse(document: Document, job: Job, capture) -> None:
    with capture(execute=True):
        services.document_parse(document_id=document.id, job_id=job.id)


def observe_drafts(monkeypatch, on_draft) -> None:
    """Call `on_draft(index)` as the chunker produces each draft, before it
    is handed to document_parse."""
    chunk_sections = parsing.chunk_sections

    def observed(*args, **kwargs):
        for index, draft in enumerate(chunk_sections(*args, **kwargs)):
            on_draft(index)
            yield draft

    monkeypatch.setattr(parsing, "chunk_sections", observed)


def embed_all(document: Document, *, model: str) -> None:
    for chunk in Chunk.objects.filter(document=document):
        Chunk.objects.filter(id=chunk.id).update(
            status="ready", embedding=[chunk.position / 10] * 384, embedding_model=model
        )
    Document.objects.filter(id=document.id).update(status="ready")
    Job.objects.filter(subject_id=document.id).update(status="completed", progress_percentage=100)


def chunk_rows(document: Document) -> list[tuple]:
    return list(
        Chunk.objects.filter(document=document).order_by("position").values_list("id", "position", "content", "status")
    )


def guide(title: str, sections: dict[str, str]) -> bytes:
    return (f"# {title}\n\n" + "".join(f"## {name}\n\n{body}\n\n" for name, body in sections.items())).encode()


def test_chunks_are_stored_in_batches_while_the_file_is_read(
    monkeypatch, dispatched, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(parsing, "INSERT_BATCH_SIZE", 4)
    document, job = running_index(markdown_document(sections=13))
    stored_before_draft = []
    observe_drafts(
        monkeypatch, lambda index: stored_before_draft.append(Chunk.objects.filter(document=document).count())
    )

    parse(document, job, django_capture_on_commit_callbacks)

    rows = chunk_rows(document)
    count = len(rows)
    assert count == 14
    assert stored_before_draft == [4 * (index // 4) for index in range(count)]
    assert [position for _, position, _, _ in rows] == list(range(count))
    assert {status for *_, status in rows} == {"pending"}
    assert dispatched == [([chunk_id for chunk_id, *_ in rows], Document.objects.get(id=document.id).generation)]
    job.refresh_from_db()
    assert job.chunks_created == count and job.celery_chord_id


def test_reindex_keeps_unchanged_chunks_with_their_rows_and_vectors(
    monkeypatch, dispatched, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(parsing, "INSERT_BATCH_SIZE", 2)
    river, estuary, delta, lake = (
        f"The {name} section explains how water moves through the {name} over the seasons."
        for name in ("river", "estuary", "delta", "lake")
    )
    document, job = running_index(guide("Guide", {"River": river, "Estuary": estuary, "Delta": delta, "Lake": lake}))
    parse(document, job, django_capture_on_commit_callbacks)
    model = document.project.embedding_model
    embed_all(document, model=model)
    # Embedded by a model the project no longer uses: not reusable.
    Chunk.objects.filter(document=document, content__startswith="## Lake").update(embedding_model="older-model")
    before = {content: (chunk_id, position) for chunk_id, position, content, _ in chunk_rows(document)}
    vectors = dict(Chunk.objects.filter(document=document).values_list("id", "embedding"))

    # A new section first (every position moves), "Estuary" edited, "Delta"
    # gone, and a new title in every section's structure.
    replace_stored_bytes(
        document,
        guide(
            "Guide v2",
            {"Springs": "Where the water starts.", "River": river, "Estuary": estuary + " Edited.", "Lake": lake},
        ),
    )
    reindex = running_reindex(document)
    parse(document, reindex, django_capture_on_commit_callbacks)

    rows = chunk_rows(document)
    by_content = {content: (chunk_id, position, status) for chunk_id, position, content, status in rows}
    assert [position for _, position, _, _ in rows] == list(range(len(rows))) == list(range(5))
    river_id, old_river_position = before[f"## River\n\n{river}"]
    assert by_content[f"## River\n\n{river}"] == (river_id, 2, "ready")
    assert old_river_position == 1
    assert list(Chunk.objects.get(id=river_id).embedding) == list(vectors[river_id])
    assert Chunk.objects.get(id=river_id).structure["heading_path"] == ["Guide v2", "River"]
    old_ids = {chunk_id for chunk_id, _ in before.values()}
    assert not Chunk.objects.filter(id__in=old_ids - {river_id}).exists()
    new_ids = [chunk_id for chunk_id, _, content, status in rows if chunk_id != river_id]
    assert {by_content[content][2] for content in by_content if by_content[content][0] != river_id} == {"pending"}
    assert dispatched[-1] == (new_ids, Document.objects.get(id=document.id).generation)
    reindex.refresh_from_db()
    assert reindex.chunks_created == 5
    assert reindex.progress_message == "embedding 0/4 chunks (1 unchanged)"


def test_unchanged_reindex_keeps_every_chunk_and_finalizes_without_a_chord(
    dispatched, django_capture_on_commit_callbacks
):
    document, job = running_index(markdown_document(sections=5))
    parse(document, job, django_capture_on_commit_callbacks)
    embed_all(document, model=document.project.embedding_model)
    before = chunk_rows(document)

    reindex = running_reindex(document)
    parse(document, reindex, django_capture_on_commit_callbacks)

    assert chunk_rows(document) == before
    assert len(dispatched) == 1  # the first index only
    assert Document.objects.get(id=document.id).status == "ready"
    assert Job.objects.get(id=reindex.id).status == "completed"


def test_parse_error_while_reading_leaves_no_chunk_and_fails_the_document(
    monkeypatch, dispatched, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(parsing, "INSERT_BATCH_SIZE", 2)
    document, job = running_index(markdown_document(sections=8))

    def damaged_after_five(index):
        if index == 5:
            raise ParseError("the file is damaged after its fifth section")

    observe_drafts(monkeypatch, damaged_after_five)
    parse(document, job, django_capture_on_commit_callbacks)

    assert not Chunk.objects.filter(document=document).exists()
    document.refresh_from_db()
    job.refresh_from_db()
    assert (document.status, document.error_message) == ("error", "the file is damaged after its fifth section")
    assert (job.status, job.error_type) == ("failed", "parse_error")
    assert dispatched == []


def test_time_limit_while_a_batch_is_stored_leaves_no_chunk_and_says_so(
    monkeypatch, dispatched, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(parsing, "INSERT_BATCH_SIZE", 2)
    document, job = running_index(markdown_document(sections=8))
    bulk_create = Chunk.objects.bulk_create
    batches = []

    def limit_strikes_in_the_third_batch(chunks, *args, **kwargs):
        batches.append(len(chunks))
        if len(batches) == 3:
            raise SoftTimeLimitExceeded()
        return bulk_create(chunks, *args, **kwargs)

    monkeypatch.setattr(Chunk.objects, "bulk_create", limit_strikes_in_the_third_batch)
    parse(document, job, django_capture_on_commit_callbacks)

    assert not Chunk.objects.filter(document=document).exists()
    document.refresh_from_db()
    job.refresh_from_db()
    assert document.status == "error" and "time limit" in document.error_message
    assert (job.status, job.error_type) == ("failed", "parse_error")
    assert dispatched == []


def test_file_without_text_fails_with_no_content(dispatched, django_capture_on_commit_callbacks):
    document, job = running_index(b" \n\n\t\n  \n", "blank.txt")
    parse(document, job, django_capture_on_commit_callbacks)

    document.refresh_from_db()
    job.refresh_from_db()
    assert document.status == "error" and "no extractable text" in document.error_message
    assert (job.status, job.error_type) == ("failed", "no_content")
    assert not Chunk.objects.filter(document=document).exists()


def test_dispatching_a_chord_keeps_nothing_per_task_in_the_process(monkeypatch):
    # As in the ingest worker, which never waits on results of the tasks it sends.
    monkeypatch.setattr("celery.backends.redis.task_join_will_block", lambda: True)

    def dispatch(count: int) -> None:
        services.dispatch_chord(chunk_ids=list(range(count)), document_id=0, generation=0, chord_id=str(uuid.uuid4()))

    dispatch(1)  # connections and imports
    gc.collect()
    tracemalloc.start()
    try:
        dispatch(2000)
        gc.collect()
        retained, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # celery.chord kept a result and a result subscription per task (about
    # 1.5 KB each, for good) and peaked at 6 KB per task.
    assert retained < 500_000
    assert peak < 2_000_000


@pytest.mark.django_db(transaction=True)
def test_cancel_while_a_parse_stores_chunks_is_not_held_up_and_the_run_leaves_nothing(monkeypatch):
    monkeypatch.setattr(parsing, "INSERT_BATCH_SIZE", 2)
    # This test is the worker: admission sends no parse task.
    monkeypatch.setattr(services, "dispatch_job", lambda job: None)
    monkeypatch.setattr(parsing, "dispatch_chord", lambda **kwargs: pytest.fail("a cancelled run dispatched"))
    document, job = running_index(markdown_document(sections=8))
    batches_stored, cancelled = threading.Event(), threading.Event()

    def wait_for_the_cancel(index):
        if index == 5:
            batches_stored.set()
            assert cancelled.wait(timeout=30)

    observe_drafts(monkeypatch, wait_for_the_cancel)
    outcome = []

    def parse_in_the_worker():
        try:
            services.document_parse(document_id=document.id, job_id=job.id)
            outcome.append("returned")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            outcome.append(exc)
        finally:
            connection.close()

    worker = threading.Thread(target=parse_in_the_worker)
    worker.start()
    try:
        assert batches_stored.wait(timeout=30)
        with transaction.atomic():
            # A lock held by the parse would make this fail, not hang.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '5s'")
            job_cancel(job_id=job.id)
    finally:
        cancelled.set()
        worker.join(timeout=60)

    assert outcome == ["returned"]
    assert not Chunk.objects.filter(document=document).exists()
    document.refresh_from_db()
    job.refresh_from_db()
    assert document.status == "cancelled" and document.parsing_finished_at is None
    assert job.status == "cancelled" and not job.celery_chord_id and job.chunks_created == 0


def test_stored_chunks_carry_their_offsets_in_the_extracted_text(dispatched, django_capture_on_commit_callbacks):
    from documents.chunking import SECTION_SEPARATOR
    from documents.parsers import parse_file

    document, job = running_index(markdown_document(sections=12))
    parse(document, job, django_capture_on_commit_callbacks)
    document.refresh_from_db()
    with local_path(document.file) as path:
        text = SECTION_SEPARATOR.join(section.text for section in parse_file(path, document.filename).sections)
    chunks = list(Chunk.objects.filter(document=document).order_by("position"))
    assert len(chunks) > 1
    for chunk in chunks:
        assert "".join(text[chunk.start_offset : chunk.end_offset].split()) == "".join(chunk.content.split())


def test_a_parse_stores_its_chunks_waiting_and_marks_only_the_first_window_sent(
    settings, dispatched, django_capture_on_commit_callbacks
):
    # Windowed dispatch sends the rest one by one; a parse that marked every
    # chunk sent made dispatch_chord write every chunk row a second time.
    settings.MIRAGE_DISPATCH_WINDOW = 3
    document, job = running_index(markdown_document(sections=7))

    parse(document, job, django_capture_on_commit_callbacks)

    sent = Chunk.objects.filter(document=document, dispatched_at__isnull=False)
    assert sorted(sent.values_list("position", flat=True)) == [0, 1, 2]
    assert Chunk.objects.filter(document=document, dispatched_at__isnull=True).count() == 5
    assert len(dispatched) == 1
