"""The pipeline end to end: real Postgres, real Redis, a real Celery worker."""

import pytest

from documents.models import Chunk, Document
from jobs.models import Job
from tests.documents.test_parsers import minimal_pdf
from tests.support.corpus import CORPUS, requires_corpus
from tests.support.factories import make_project, markdown_document, submit_bytes, submit_path
from tests.support.ocr import requires_tesseract
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

POISON_EMBEDDER = "tests.support.embedders.PoisonEmbedder"


def wait_final(document, timeout=90):
    return wait_until(
        lambda: (d := Document.objects.get(id=document.id)).status in Document.FINAL_STATUSES and d,
        timeout=timeout,
        message=f"document {document.id} final",
    )


def test_markdown_document_ends_ready_with_every_chunk_embedded(worker):
    project = make_project()
    submission = submit_bytes(project, markdown_document(sections=4), "rivers.md")

    document = wait_final(submission.document)

    assert document.status == "ready"
    chunks = list(Chunk.objects.filter(document=document).order_by("position"))
    assert chunks and all(chunk.status == "ready" for chunk in chunks)
    assert all(chunk.embedding is not None and len(chunk.embedding) == 384 for chunk in chunks)
    assert [chunk.position for chunk in chunks] == list(range(len(chunks)))
    assert chunks[1].structure["heading_path"][-1].startswith("Section")
    job = Job.objects.get(id=submission.job.id)
    assert job.status == "completed"
    assert job.progress_percentage == 100
    assert job.chunks_created == len(chunks) and job.chunks_failed == 0
    assert document.indexed_at is not None


def test_document_is_partial_and_job_completed_when_one_chunk_fails_permanently(worker):
    project = make_project(embedder=POISON_EMBEDDER)
    submission = submit_bytes(project, markdown_document(sections=4, poison_at=2), "poisoned.md")

    document = wait_final(submission.document)

    assert document.status == "partial"
    assert "1/" in document.error_message
    failed = Chunk.objects.filter(document=document, status="error")
    assert failed.count() == 1
    assert "rejected the input" in failed.get().error
    job = Job.objects.get(id=submission.job.id)
    assert job.status == "completed"
    assert job.chunks_failed == 1


def test_unreadable_file_gives_document_error_and_failed_job(worker):
    project = make_project()
    submission = submit_bytes(project, b"%PDF-1.7\n1 0 obj << /Type /Catalog >>\nthis is not a pdf body", "broken.pdf")

    document = wait_final(submission.document)

    assert document.status == "error"
    assert document.error_message
    assert "Traceback" not in document.error_message
    job = Job.objects.get(id=submission.job.id)
    assert job.status == "failed"
    assert job.error_type == "parse_error"
    assert job.progress_percentage < 100
    assert Chunk.objects.filter(document=document).count() == 0


@requires_corpus
@requires_tesseract("eng")
def test_image_only_pdf_is_read_by_ocr_and_ends_ready(worker):
    project = make_project()
    submission = submit_path(project, CORPUS / "pdf" / "epson-scan.pdf")

    document = wait_final(submission.document, timeout=300)

    assert document.status == "ready", document.error_message
    chunks = Chunk.objects.filter(document=document)
    assert chunks.exists()
    assert all(chunk.structure["ocr"] is True and chunk.structure["page"] == 1 for chunk in chunks)
    assert Job.objects.get(id=submission.job.id).status == "completed"


def test_pdf_with_blank_pages_only_is_an_error_never_ready_with_zero_chunks(worker, tmp_path, monkeypatch):
    # Without Tesseract on PATH the document must still end in a clear error.
    monkeypatch.setenv("PATH", str(tmp_path))
    project = make_project()
    submission = submit_bytes(project, minimal_pdf(["", ""]), "blank.pdf")

    document = wait_final(submission.document)

    assert document.status == "error"
    assert "Tesseract is not installed" in document.error_message
    assert "apt-get install tesseract-ocr" in document.error_message
    assert Job.objects.get(id=submission.job.id).status == "failed"


def test_same_bytes_twice_return_the_first_document_and_start_nothing(worker):
    project = make_project()
    first = submit_bytes(project, markdown_document(), "a.md")
    second = submit_bytes(project, markdown_document(), "b.md")

    assert second.created is False
    assert second.document.id == first.document.id
    assert Job.objects.filter(subject_id=first.document.id).count() == 1


def test_a_vector_of_the_wrong_dimension_is_refused_never_stored(worker):
    project = make_project(embedder="tests.support.embedders.WrongDimensionsEmbedder")
    submission = submit_bytes(project, markdown_document(sections=2), "dims.md")

    document = wait_final(submission.document)

    assert document.status == "error"
    chunks = Chunk.objects.filter(document=document)
    assert all(chunk.status == "error" and chunk.embedding is None for chunk in chunks)
    assert "256-dimensional" in chunks.first().error and "384" in chunks.first().error
    assert Job.objects.get(id=submission.job.id).status == "failed"


def test_the_document_is_finalized_by_the_callback_of_its_embedding_chord(worker):
    from celery.result import AsyncResult

    project = make_project()
    submission = submit_bytes(project, markdown_document(sections=3), "chord.md")
    assert wait_final(submission.document).status == "ready"

    # The reconciler would also finalize a document whose callback never
    # came: the callback's own result shows that the chord fired it.
    chord_id = Job.objects.get(id=submission.job.id).celery_chord_id
    wait_until(lambda: AsyncResult(chord_id).state == "SUCCESS", timeout=30, message="chord callback ran")


def test_text_shared_by_two_documents_is_embedded_once(worker):
    from tests.support import embedders

    project = make_project(embedder="tests.support.embedders.RecordingEmbedder")
    first = submit_bytes(project, markdown_document(sections=3), "first.md")
    wait_final(first.document)
    embedders.reset_calls()

    second = submit_bytes(project, markdown_document(sections=3) + b"\n## Extra\n\nOne new paragraph.\n", "second.md")
    document = wait_final(second.document)

    assert document.status == "ready"
    calls = embedders.recorded_calls()
    assert len(calls) == 1 and "One new paragraph" in calls[0][1]


def test_ingest_command_waits_with_progress_and_prints_the_outcome(worker, tmp_path):
    from io import StringIO

    from django.core.management import CommandError, call_command

    (tmp_path / "notes.md").write_bytes(markdown_document(sections=3))
    (tmp_path / "photo.md").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4)
    out = StringIO()

    with pytest.raises(CommandError, match="files were refused") as refused:
        call_command("ingest", str(tmp_path), project="cli", embedder="hash", wait=True, timeout=120, stdout=out)
    assert refused.value.returncode == 3

    text = out.getvalue()
    assert "refused" in text and "photo.md" in text and "JPEG" in text
    assert "100%" in text
    assert "ready     notes.md" in text
    assert "job" in text and "completed" in text


def test_ingest_exits_4_when_a_document_ends_error_and_0_when_all_are_ready(worker, tmp_path):
    from io import StringIO

    from django.core.management import CommandError, call_command

    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "notes.md").write_bytes(markdown_document(sections=2))
    call_command(
        "ingest",
        str(tmp_path / "good"),
        project="exit-codes",
        embedder="hash",
        wait=True,
        timeout=120,
        stdout=StringIO(),
    )

    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "blank.md").write_bytes(b"   \n\n   \n")
    out = StringIO()
    with pytest.raises(CommandError, match="documents did not end ready") as failed:
        call_command("ingest", str(tmp_path / "blank"), project="exit-codes", wait=True, timeout=120, stdout=out)
    assert failed.value.returncode == 4
    assert "error     blank.md" in out.getvalue()
