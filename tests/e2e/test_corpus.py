"""Every file of the shared corpus through the real pipeline: readable files
end `ready` or `partial` with chunks that keep their place in the document;
bad inputs end in a clear error or are refused; the worker survives all."""

import pytest

from documents import services
from documents.models import Chunk, Document
from documents.parsers import ParseError
from mirage.celery import app as celery_app
from tests.support.corpus import CORPUS, requires_corpus
from tests.support.factories import make_project
from tests.support.ocr import tesseract_languages
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    requires_corpus,
    # A generous deadline, not a bound: the corpus holds a 117-page PDF and a
    # scan read by OCR, and a shared two-core machine can be slow.
    pytest.mark.timeout(1800),
]

BAD_INPUTS = {
    "adversarial/binary-image.md",
    "adversarial/empty.md",
    "adversarial/zip-as-epub.epub",
    "pdf/libreoffice-writer-password.pdf",
    "pdf/paper-100k.pdf",
    "epub/ocf-zip-unreadable-no-end-header-fatal.epub",
}
# A scan without a text layer is read by OCR where Tesseract is installed,
# and ends in an error saying what to install where it is not.
if "eng" not in tesseract_languages():
    BAD_INPUTS.add("pdf/epson-scan.pdf")
# Where each format records its place in the document.
PLACE_KEYS = {"markdown": "heading_path", "html": "heading_path", "pdf": "page", "epub": "chapter", "text": "title"}


def corpus_files():
    return sorted(
        path for path in CORPUS.rglob("*") if path.is_file() and path.name not in ("MANIFEST.tsv", "README.md")
    )


def test_the_whole_corpus_ends_in_true_final_states(worker, settings):
    # Chunks of 1,600 tokens (the hash embedder takes 8,192): a third as many
    # chunks through the same pipeline as at the default 400. The chunker at
    # the model's limit is checked on the whole corpus in
    # tests/documents/test_corpus_parsing.py.
    settings.MIRAGE_CHUNK_SIZE = 1600
    project = make_project()
    submitted: dict[str, int] = {}
    refused: dict[str, str] = {}
    for path in corpus_files():
        name = str(path.relative_to(CORPUS))
        try:
            with open(path, "rb") as handle:
                submitted[name] = services.document_submit(
                    project=project, source=handle, filename=path.name
                ).document.id
        except (services.UploadRejected, ParseError) as exc:
            refused[name] = str(exc)

    wait_until(
        lambda: not Document.objects.filter(id__in=submitted.values(), status__in=Document.ACTIVE_STATUSES).exists(),
        timeout=1700,
        interval=1.0,
        message="every corpus document final",
    )

    for name, document_id in submitted.items():
        document = Document.objects.get(id=document_id)
        if name in BAD_INPUTS:
            assert document.status == "error", name
            assert document.error_message and "Traceback" not in document.error_message, name
            assert not Chunk.objects.filter(document=document).exists(), name
            continue
        assert document.status in ("ready", "partial"), (name, document.status, document.error_message)
        chunks = Chunk.objects.filter(document=document)
        assert chunks.exists(), name
        key = PLACE_KEYS[document.file_type]
        structures = [chunk.structure for chunk in chunks.only("structure")]
        # Every chunk says where it stands (text before the first heading has
        # an empty heading path), and the document's structure came through.
        assert all(key in structure for structure in structures), (name, key)
        assert any(structure[key] for structure in structures), (name, key)
        assert not chunks.filter(content="").exists(), name
    for name, reason in refused.items():
        assert name in BAD_INPUTS, (name, reason)
        assert reason
    assert set(submitted) | set(refused) == {str(p.relative_to(CORPUS)) for p in corpus_files()}
    # The worker is alive and answers after every bad input.
    assert celery_app.control.ping(timeout=5.0)
