"""Word, PowerPoint, Excel and OpenDocument parsing, OCR of scanned PDFs,
and the refusals of hostile or unreadable packages. Real files come from
../shared/formats (made from the corpus with LibreOffice) and from the
builders in tests/support/office_files.py."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from pypdf import PdfReader

from documents.chunking import chunk_sections
from documents.embeddings.base import estimate_tokens
from documents.parsers import ParseError, UnsupportedFileType, detect_type, ocr, packages, parse_file
from tests.support import office_files
from tests.support.corpus import CORPUS, FORMATS
from tests.support.ocr import requires_tesseract

pytestmark = pytest.mark.unit

requires_formats = pytest.mark.skipif(not FORMATS.is_dir(), reason="shared formats corpus not available")
OFFICE = FORMATS / "office"


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def parsed(path: Path, name: str | None = None):
    document = parse_file(path, name or path.name)
    return document, list(document.sections)


def chunks_of(sections, *, max_tokens=254):
    return list(chunk_sections(sections, max_tokens=max_tokens, overlap_tokens=10, count_tokens=estimate_tokens))


# --- detection -----------------------------------------------------------------


@requires_formats
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("htmlcssguide.docx", "docx"),
        ("pdflatex-4-pages.pptx", "pptx"),
        ("corpus-manifest.xlsx", "xlsx"),
        ("cppguide.odt", "odt"),
        ("corpus-manifest.ods", "ods"),
    ],
)
def test_office_files_are_detected_by_their_package_whatever_their_name(name, expected):
    head = (OFFICE / name).read_bytes()[:8192]
    assert detect_type(head, name) == expected
    assert detect_type(head, "upload.bin") == expected


def test_manifest_first_decides_over_the_name():
    data = office_files.rich_pptx()
    # python-pptx writes the manifest first, as Word and PowerPoint do.
    assert data[30:49] == b"[Content_Types].xml"
    assert detect_type(data[:8192], "slides.docx") == "pptx"


def test_epub_named_docx_is_read_as_epub(tmp_path):
    path = write(tmp_path, "book.docx", office_files.epub_named_docx())
    document, sections = parsed(path)
    assert document.file_type == "epub"
    assert sections and all("chapter" in section.structure for section in sections)


def test_plain_zip_named_docx_is_refused_with_a_reason():
    with pytest.raises(UnsupportedFileType) as caught:
        detect_type(office_files.plain_zip(), "report.docx")
    assert str(caught.value) == (
        "file content is a plain ZIP archive (no Office, OpenDocument or EPUB manifest), not a Word document"
    )
    assert caught.value.detected_type == "application/zip"


def test_password_protected_docx_is_refused_with_a_reason():
    with pytest.raises(UnsupportedFileType) as caught:
        detect_type(office_files.encrypted_docx()[:8192], "secret.docx")
    assert str(caught.value).startswith("file is a password-protected Office document")
    assert "without a password" in str(caught.value)


def test_legacy_office_file_is_refused_as_legacy():
    legacy = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(512)
    with pytest.raises(UnsupportedFileType, match="legacy Microsoft Office document"):
        detect_type(legacy, "old.doc")


def test_odf_drawing_is_refused_by_kind():
    mimetype = b"application/vnd.oasis.opendocument.graphics"
    size = len(mimetype).to_bytes(4, "little")
    data = b"PK\x03\x04" + bytes(14) + size * 2 + (8).to_bytes(2, "little") + bytes(2) + b"mimetype" + mimetype
    with pytest.raises(UnsupportedFileType, match="OpenDocument file of a kind that is not read") as caught:
        detect_type(data, "drawing.odg")
    assert caught.value.detected_type == mimetype.decode()


@requires_formats
def test_corrupt_docx_ends_with_a_clear_error(tmp_path):
    path = write(tmp_path, "cut.docx", office_files.corrupt_docx())
    assert detect_type(path.read_bytes()[:8192], path.name) == "docx"
    with pytest.raises(ParseError, match=r"^file is damaged or truncated: the ZIP package of a Word document"):
        parse_file(path, path.name)


def test_a_package_whose_manifest_says_otherwise_is_refused(tmp_path):
    path = write(tmp_path, "slides.xlsx", office_files.rich_pptx())
    from documents.parsers import xlsx

    with pytest.raises(
        ParseError, match=r"file content is a PowerPoint presentation \(\.pptx\), not an Excel workbook"
    ):
        xlsx.parse(path, path.name)


# --- zip bombs -----------------------------------------------------------------


def test_zip_bomb_named_xlsx_is_refused_before_anything_is_inflated(tmp_path):
    path = write(tmp_path, "bomb.xlsx", office_files.zip_bomb_xlsx())
    assert detect_type(path.read_bytes()[:8192], path.name) == "xlsx"
    with pytest.raises(
        ParseError, match=r"^file looks like a zip bomb: xl/worksheets/sheet1.xml would inflate \d+ times"
    ):
        parse_file(path, path.name)


def test_declared_sizes_over_the_budget_are_refused(tmp_path, monkeypatch):
    # The budget is a module constant (the hook for per-project budgets).
    monkeypatch.setattr(packages, "MAX_ENTRY_BYTES", 1024)
    path = write(tmp_path, "rich.docx", office_files.rich_docx())
    with pytest.raises(ParseError, match=r"would inflate to 0 MB, over the 0 MB limit"):
        parse_file(path, path.name)
    monkeypatch.setattr(packages, "MAX_ENTRY_BYTES", 512 * 1024 * 1024)
    monkeypatch.setattr(packages, "MAX_TOTAL_BYTES", 2048)
    with pytest.raises(ParseError, match=r"its contents would inflate to"):
        parse_file(path, path.name)


def test_a_package_with_too_many_entries_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(packages, "MAX_ENTRIES", 3)
    path = write(tmp_path, "rich.docx", office_files.rich_docx())
    with pytest.raises(ParseError, match="holds more than 3 packed files"):
        parse_file(path, path.name)


# --- Word ------------------------------------------------------------------------


def test_docx_headings_lists_and_tables_keep_their_place(tmp_path):
    document, sections = parsed(write(tmp_path, "manual.docx", office_files.rich_docx()))
    assert document.file_type == "docx" and document.title == "Field Manual"
    by_text = {section.text: section for section in sections}
    assert by_text["Rivers carry water to the sea."].structure["heading_path"] == ["Rivers"]
    assert by_text["- Silt settles where the river slows."].structure["heading_path"] == ["Rivers", "Deltas"]
    assert by_text["Lakes hold still water."].structure["heading_path"] == ["Lakes"]
    tables = [section for section in sections if section.table_header]
    assert len(tables) == 1
    assert tables[0].table_header == "| River | Length km |\n| --- | --- |"
    assert tables[0].text == "| Nile | 6650 |\n| Rhine | 1230 |"
    assert tables[0].structure["heading_path"] == ["Rivers", "Deltas"]


def test_docx_leaves_out_headers_footers_comments_and_unaccepted_insertions(tmp_path):
    _, sections = parsed(write(tmp_path, "manual.docx", office_files.rich_docx()))
    text = "\n".join(section.text for section in sections)
    for absent in ("HEADER-ONLY", "FOOTER-ONLY", "COMMENT-ONLY", "INSERTED-UNACCEPTED"):
        assert absent not in text
    # An unaccepted deletion is still part of the document.
    assert "The delta grows every year" in text


@requires_formats
def test_shared_docx_keeps_its_heading_path_and_code_blocks():
    document, sections = parsed(OFFICE / "htmlcssguide.docx")
    assert document.title == "Google HTML/CSS Style Guide"
    paths = {tuple(section.structure["heading_path"]) for section in sections}
    assert ("Google HTML/CSS Style Guide", "General", "General Style Rules", "Protocol") in paths
    code = [section for section in sections if section.atomic and "<script" in section.text]
    assert code and "\n" in code[0].text


# --- PowerPoint ------------------------------------------------------------------


def test_pptx_has_one_section_per_slide_with_notes_and_tables(tmp_path):
    document, sections = parsed(write(tmp_path, "review.pptx", office_files.rich_pptx()))
    assert document.file_type == "pptx" and document.title == "Quarterly Review"
    assert sections[0].text == "Revenue grew\nSales rose in every region."
    assert sections[0].structure == {"title": "Quarterly Review", "slide": 1, "slide_title": "Revenue grew"}
    notes = [section for section in sections if section.structure.get("notes")]
    assert [(section.structure["slide"], section.text) for section in notes] == [(1, "Mention the NOTES-ONLY caveat.")]
    table = next(section for section in sections if section.table_header)
    assert table.structure["slide"] == 2 and table.structure["slide_title"] == "Regions"
    assert table.text == "| North | 120 |\n| South | 95 |"


def test_pptx_without_text_ends_with_a_clear_error(tmp_path):
    path = write(tmp_path, "pictures.pptx", office_files.pictures_only_pptx())
    document = parse_file(path, path.name)
    with pytest.raises(ParseError, match=r"^presentation has no text"):
        list(document.sections)


@requires_formats
def test_shared_pptx_gives_its_four_slides_in_order():
    _, sections = parsed(OFFICE / "pdflatex-4-pages.pptx")
    assert [section.structure["slide"] for section in sections] == [1, 2, 3, 4]
    assert sections[0].structure["slide_title"] == "Hello, here is some text without a meaning."
    assert "Huardest gefburn" in sections[1].text


# --- Excel -----------------------------------------------------------------------


def test_xlsx_skips_empty_rows_and_columns_and_reads_cached_formula_values(tmp_path):
    document, sections = parsed(write(tmp_path, "rivers.xlsx", office_files.sparse_xlsx()))
    assert document.file_type == "xlsx"
    assert [section.structure["sheet"] for section in sections] == ["Rivers", "Lakes"]
    assert sections[0].table_header == "| River | Length km | Country |\n| --- | --- | --- |"
    assert sections[0].text == "| Nile | 6650 | Egypt |\n| Rhine | 1230.5 | Germany |\n| Total | 7880.5 |  |"
    assert sections[1].text == "| Baikal | 31722 |"


@requires_formats
@pytest.mark.parametrize("name", ["corpus-manifest.xlsx", "corpus-manifest.ods"])
def test_shared_sheets_give_chunks_that_each_start_with_the_header_row(name):
    _, sections = parsed(OFFICE / name)
    assert {section.structure["sheet"] for section in sections} == {"corpus-manifest"}
    header = "| file | type | source_repo | source_path | commit | licence | bytes | notes |"
    chunks = chunks_of(sections)
    assert len(chunks) > 5
    assert all(draft.content.startswith(header + "\n|") for draft in chunks)
    manifest_rows = (CORPUS / "MANIFEST.tsv").read_text().strip().split("\n")[1:] if CORPUS.is_dir() else []
    rows = [line for draft in chunks for line in draft.content.split("\n")[2:]]
    if manifest_rows:
        assert len(set(rows)) == len(manifest_rows)


def test_a_sheet_of_100000_rows_streams_in_flat_memory(tmp_path):
    path = tmp_path / "long.xlsx"
    office_files.long_xlsx(path, rows=100_000)
    # Measured in a fresh interpreter: its peak resident memory after
    # reading and chunking every row, against the same after imports only.
    script = f"""
import json, resource, sys
sys.path.insert(0, {str(Path.cwd())!r})
from documents.chunking import chunk_sections
from documents.embeddings.base import estimate_tokens
from documents.parsers import parse_file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
document = parse_file({str(path)!r}, "long.xlsx")
rows = chunks = 0
for draft in chunk_sections(document.sections, max_tokens=254, overlap_tokens=32, count_tokens=estimate_tokens):
    chunks += 1
    rows += draft.content.count("\\n| ") - 1
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"rows": rows, "chunks": chunks, "grown_mb": (after - before) / 1024}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["rows"] == 100_000
    # The sheet is 9 MB of XML and 5 MB of rendered rows; held whole (as
    # openpyxl's normal mode does) it takes several hundred MB.
    assert figures["grown_mb"] < 64, figures


# --- OpenDocument ----------------------------------------------------------------


@requires_formats
def test_shared_odt_keeps_headings_and_code():
    document, sections = parsed(OFFICE / "cppguide.odt")
    assert document.file_type == "odt" and document.title == "Google C++ Style Guide"
    paths = {tuple(section.structure["heading_path"]) for section in sections}
    assert ("Background",) in paths
    assert any(len(path) >= 2 for path in paths)
    assert any(section.atomic and "#include" in section.text for section in sections)


def _odp(tmp_path: Path) -> Path:
    content = """<?xml version="1.0" encoding="UTF-8"?>
<office:document-content xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:presentation="urn:oasis:names:tc:opendocument:xmlns:presentation:1.0" office:version="1.3">
<office:body><office:presentation>
<draw:page draw:name="p1">
 <draw:frame presentation:class="title"><draw:text-box><text:p>Tides</text:p></draw:text-box></draw:frame>
 <draw:frame presentation:class="outline"><draw:text-box><text:p>The moon pulls the sea.</text:p></draw:text-box></draw:frame>
 <presentation:notes><draw:frame><draw:text-box><text:p>Say it slowly.</text:p></draw:text-box></draw:frame></presentation:notes>
</draw:page>
<draw:page draw:name="p2">
 <draw:frame><draw:text-box><text:p>Spring tides come twice a month.</text:p></draw:text-box></draw:frame>
</draw:page>
</office:presentation></office:body></office:document-content>"""
    path = tmp_path / "tides.odp"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), "application/vnd.oasis.opendocument.presentation")
        archive.writestr("content.xml", content, compress_type=zipfile.ZIP_DEFLATED)
    return path


def test_odp_has_slides_titles_and_notes(tmp_path):
    path = _odp(tmp_path)
    assert detect_type(path.read_bytes()[:8192], path.name) == "odp"
    document, sections = parsed(path)
    assert document.file_type == "odp"
    assert [(section.structure["slide"], section.structure["slide_title"], section.text) for section in sections] == [
        (1, "Tides", "Tides\nThe moon pulls the sea."),
        (1, "Tides", "Say it slowly."),
        (2, "Spring tides come twice a month.", "Spring tides come twice a month."),
    ]
    assert sections[1].structure["notes"] is True and "notes" not in sections[0].structure


# --- OCR ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "usable"),
    [
        ("A page of ordinary prose, long enough to count as a text layer.", True),
        ("Seite 12", False),
        ("", False),
        ("\ue000\ue001\ue002\ue003" * 10, False),
        ("%$#@!&*(){}[]<>" * 4, False),
        ("12.5 13.7 19.2 20.1 22.8 31.0 44.4", True),
    ],
)
def test_text_layer_quality_is_measured(text, usable):
    assert ocr.text_layer_quality(text).usable is usable


def test_short_clean_text_without_a_picture_is_kept_and_never_ocrd(tmp_path):
    from tests.documents.test_parsers import minimal_pdf

    path = write(tmp_path, "short.pdf", minimal_pdf(["Page 3."]))
    _, sections = parsed(path)
    assert [(section.text, section.structure.get("ocr")) for section in sections] == [("Page 3.", None)]


@requires_formats
@requires_tesseract("eng")
def test_scanned_pages_are_read_by_ocr_with_their_confidence():
    path = FORMATS / "scans" / "pdflatex-pages-1-2-scan.pdf"
    document, sections = parsed(path)
    assert [section.structure["page"] for section in sections] == [1, 2]
    assert all(section.structure["ocr"] is True for section in sections)
    assert all(60 < section.structure["ocr_confidence"] <= 100 for section in sections)
    assert document.metadata["pages_ocr"] == 2
    original = PdfReader(CORPUS / "pdf" / "pdflatex-4-pages.pdf") if CORPUS.is_dir() else None
    if original is not None:
        for section, page in zip(sections, original.pages[:2], strict=True):
            expected = set(page.extract_text().split())
            found = set(section.text.split())
            assert len(expected & found) / len(expected) > 0.85


@requires_tesseract("eng", "deu")
@pytest.mark.skipif(not office_files.GERMAN_SOURCE.exists(), reason="shared corpus not available")
def test_a_german_scan_is_read_with_german_ocr(tmp_path, monkeypatch):
    path = write(tmp_path, "topologie-scan.pdf", office_files.image_only_pdf(office_files.GERMAN_SOURCE, page_index=5))
    monkeypatch.setattr(ocr, "LANGUAGES", "deu+eng")
    _, sections = parsed(path)
    assert sections[0].structure["ocr"] is True
    text = sections[0].text
    assert "Topologische Räume" in text
    assert "folgenden Eigenschaften" in text


def test_missing_tesseract_ends_in_an_error_saying_what_to_install(tmp_path, monkeypatch):
    from tests.documents.test_parsers import minimal_pdf

    monkeypatch.setenv("PATH", str(tmp_path))  # no tesseract program on it
    document = parse_file(write(tmp_path, "scan.pdf", minimal_pdf([""])), "scan.pdf")
    with pytest.raises(ParseError) as caught:
        list(document.sections)
    assert "Tesseract is not installed" in str(caught.value)
    assert "apt-get install tesseract-ocr" in str(caught.value)


@requires_tesseract("eng")
def test_a_missing_language_pack_is_named_in_the_error(tmp_path, monkeypatch):
    from tests.documents.test_parsers import minimal_pdf

    monkeypatch.setattr(ocr, "LANGUAGES", "eng+xqz")
    document = parse_file(write(tmp_path, "scan.pdf", minimal_pdf([""])), "scan.pdf")
    with pytest.raises(ParseError, match=r"needs OCR in xqz .* apt-get install tesseract-ocr-xqz"):
        list(document.sections)


def test_ocr_languages_are_normalised():
    assert ocr.normalise_languages("eng, deu") == "eng+deu"
    assert ocr.normalise_languages("") == "eng"
