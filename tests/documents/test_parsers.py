"""Format detection and the parsers, on small hand-made inputs (built here or
kept in tests/fixtures/documents)."""

from __future__ import annotations

import io
import tracemalloc
import zipfile
from pathlib import Path

import pytest

from documents.parsers import (
    ParsedDocument,
    ParseError,
    Section,
    UnsupportedFileType,
    detect_type,
    epub,
    parse_file,
)
from documents.parsers import markdown as markdown_parser
from documents.parsers import text as text_parser
from documents.parsers.html import parse_text as parse_html_text
from documents.parsers.pdf import ENCRYPTED_MESSAGE, NO_TEXT_MESSAGE
from documents.parsers.text import decode_text
from tests.support.corpus import CORPUS, FIXTURES, require
from tests.support.ocr import requires_tesseract

pytestmark = pytest.mark.unit

JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + bytes(range(256)) * 4
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4


def sections_of(document: ParsedDocument) -> list[Section]:
    return list(document.sections)


def write(tmp_path: Path, name: str, data: bytes | str) -> Path:
    path = tmp_path / name
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def minimal_pdf(page_texts: list[str]) -> bytes:
    """A valid PDF with one Helvetica text line per entry (an empty string
    gives a page without any text)."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + 2 * index} 0 R" for index in range(len(page_texts)))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {len(page_texts)} >>".encode())
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for index, text in enumerate(page_texts):
        escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream = f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1") if text else b""
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {5 + 2 * index} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    output = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(output))
        output += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_offset = len(output)
    output += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    output += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    output += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref_offset)
    return output


CONTAINER_XML = """<?xml version="1.0"?>
<container version="1.0" xmlns="urn:oasis:names:tc:opendocument:xmlns:container">
  <rootfiles><rootfile full-path="OEBPS/content.opf" media-type="application/oebps-package+xml"/></rootfiles>
</container>"""


def xhtml(body: str, title: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<html xmlns="http://www.w3.org/1999/xhtml" xmlns:epub="http://www.idpf.org/2007/ops">'
        f"<head><title>{title}</title></head><body>{body}</body></html>"
    )


def build_epub(
    files: dict[str, str],
    spine: list[str],
    *,
    title: str = "Test Book",
    nav: str | None = None,
    ncx: str | None = None,
    listed_but_missing: tuple[str, ...] = (),
) -> bytes:
    """An EPUB with the given content documents (paths under OEBPS/)."""
    manifest = [
        f'<item id="{name.replace(".", "_")}" href="{name}" media-type="application/xhtml+xml"/>'
        for name in [*files, *listed_but_missing]
    ]
    if nav is not None:
        manifest.append('<item id="nav" href="nav.xhtml" media-type="application/xhtml+xml" properties="nav"/>')
    if ncx is not None:
        manifest.append('<item id="ncx" href="toc.ncx" media-type="application/x-dtbncx+xml"/>')
    itemrefs = "".join(f'<itemref idref="{name.replace(".", "_")}"/>' for name in spine)
    toc_attribute = ' toc="ncx"' if ncx is not None else ""
    opf = (
        '<?xml version="1.0"?><package xmlns="http://www.idpf.org/2007/opf" version="3.0" unique-identifier="id">'
        f'<metadata xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{title}</dc:title>'
        "<dc:creator>Test Author</dc:creator></metadata>"
        f"<manifest>{''.join(manifest)}</manifest>"
        f"<spine{toc_attribute}>{itemrefs}</spine></package>"
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        archive.writestr("META-INF/container.xml", CONTAINER_XML, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("OEBPS/content.opf", opf, compress_type=zipfile.ZIP_DEFLATED)
        for name, content in files.items():
            archive.writestr(f"OEBPS/{name}", content, compress_type=zipfile.ZIP_DEFLATED)
        if nav is not None:
            archive.writestr("OEBPS/nav.xhtml", nav, compress_type=zipfile.ZIP_DEFLATED)
        if ncx is not None:
            archive.writestr("OEBPS/toc.ncx", ncx, compress_type=zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def nav_document(links: list[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="{href}">{label}</a></li>' for href, label in links)
    return xhtml(f'<nav epub:type="toc"><ol>{items}</ol></nav>', title="Contents")


# --- detection -------------------------------------------------------------


def test_empty_content_is_reported_as_empty_file():
    with pytest.raises(ParseError, match="^file is empty$"):
        detect_type(b"", "notes.md")


def test_empty_file_fails_to_parse_with_file_is_empty(tmp_path):
    with pytest.raises(ParseError, match="^file is empty$"):
        parse_file(write(tmp_path, "empty.md", b""), "empty.md")


def test_jpeg_named_markdown_is_refused_naming_the_image_type():
    with pytest.raises(UnsupportedFileType) as caught:
        detect_type(JPEG_HEAD, "photo.md")
    assert str(caught.value) == "file content is a JPEG image, not markdown"
    assert caught.value.detected_type == "image/jpeg"


def test_png_named_text_is_refused():
    with pytest.raises(UnsupportedFileType) as caught:
        detect_type(PNG_HEAD, "notes.txt")
    assert caught.value.detected_type == "image/png"
    assert "PNG image" in str(caught.value)


def test_nul_heavy_content_is_refused_as_binary():
    with pytest.raises(UnsupportedFileType) as caught:
        detect_type(b"abc\x00\x00\x01\x02def\x00" * 200, "data.md")
    assert caught.value.detected_type == "application/octet-stream"
    assert "binary data" in str(caught.value)


def test_zip_without_epub_structure_is_refused():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("image.png", PNG_HEAD)
    with pytest.raises(UnsupportedFileType) as caught:
        detect_type(buffer.getvalue()[:8192], "book.epub")
    assert caught.value.detected_type == "application/zip"
    assert "not an EPUB" in str(caught.value)


def test_office_document_named_epub_is_read_as_what_its_package_says():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<document/>")
    assert detect_type(buffer.getvalue(), "book.epub") == "docx"


def test_epub_is_detected_from_its_mimetype_entry_whatever_the_name():
    data = build_epub({"c1.xhtml": xhtml("<p>x</p>")}, ["c1.xhtml"])
    assert detect_type(data[:8192], "upload.bin") == "epub"


def test_pdf_is_detected_by_header_even_after_leading_junk():
    assert detect_type(b"\r\n" + minimal_pdf(["hi"]), "scan.dat") == "pdf"


def test_markdown_that_mentions_the_pdf_header_stays_markdown():
    assert detect_type(b"# PDF internals\n\nEvery file starts with `%PDF-1.7`.\n", "pdf-notes.md") == "markdown"


def test_text_named_pdf_without_header_is_refused_as_damaged():
    with pytest.raises(UnsupportedFileType, match="no %PDF header"):
        detect_type(b"   </rdf:li>\n  <xmp:CreateDate>2019</xmp:CreateDate>\n", "paper.pdf")


def test_markdown_extension_chooses_markdown_for_text():
    assert detect_type(b"# Title\n\nBody\n", "README.md") == "markdown"
    assert detect_type(b"Plain words\n", "notes.markdown") == "markdown"


def test_markdown_looking_content_named_txt_stays_text():
    assert detect_type(b"# Title\n\n* item\n", "notes.txt") == "text"


def test_unknown_extension_with_text_content_is_text():
    assert detect_type(b"just some words\n", "LICENSE") == "text"


def test_html_is_detected_by_doctype_before_the_extension():
    assert detect_type(b"\xef\xbb\xbf  <!DOCTYPE html><html><body>x</body></html>", "page.md") == "html"
    assert detect_type(b"<?xml version='1.0'?>\n<html xmlns='x'><body/></html>", "page.txt") == "html"


def test_html_extension_chooses_html_for_fragment_without_doctype():
    assert detect_type(b"<p>fragment</p>", "snippet.html") == "html"


def test_damaged_utf8_text_is_still_text():
    head = "Valid UTF-8: naïve café.\n".encode() + b"Latin-1: caf\xe9, lone \x80\xbf, NUL\x00 here.\n"
    assert detect_type(head, "notes.txt") == "text"


# --- text ------------------------------------------------------------------


def test_text_normalises_crlf_and_splits_paragraphs(tmp_path):
    path = write(
        tmp_path, "notes.txt", b"Notes Title\r\n\r\nFirst line one.\r\nline two.\r\n\r\n\r\nSecond paragraph.\r\n"
    )
    document = parse_file(path, "notes.txt")
    sections = sections_of(document)
    assert document.file_type == "text"
    assert document.title == "Notes Title"
    assert [section.text for section in sections] == ["Notes Title", "First line one.\nline two.", "Second paragraph."]
    assert all(section.structure == {"title": "Notes Title"} for section in sections)


def test_text_bom_is_removed_and_nuls_stripped():
    decoded = decode_text(b"\xef\xbb\xbfHello\x00 world")
    assert decoded.text == "Hello world"
    assert decoded.encoding == "utf-8"


def test_utf16_with_bom_is_decoded():
    assert decode_text("Grüße\r\nzwei".encode("utf-16")).text == "Grüße\nzwei"


def test_invalid_utf8_keeps_the_valid_text_around_the_damage():
    decoded = decode_text(
        "naïve ".encode() + b"caf\xe9 \x80\xbf \xed\xa0\x80 ok\x00 " + "Ünïcödé".encode() + b" \xe2\x82"
    )
    assert decoded.text.startswith("naïve caf\ufffd")
    assert "ok Ünïcödé" in decoded.text
    assert "\x00" not in decoded.text
    assert decoded.replaced > 0


def test_latin1_text_without_any_utf8_is_read_as_windows_1252():
    document = parse_file(FIXTURES / "latin1.txt", "latin1.txt")
    assert sections_of(document)[0].text == "Café au lait, crème brûlée."
    assert document.metadata["encoding"] == "windows-1252"


def test_text_title_falls_back_to_the_file_name(tmp_path):
    document = parse_file(write(tmp_path, "blank-start.txt", "\n\n   \n"), "blank-start.txt")
    assert document.title == "blank-start"
    assert sections_of(document) == []


def test_megabyte_single_line_text_parses_into_one_section(tmp_path):
    path = write(tmp_path, "line.txt", "word " * 200_000 + "x" * 300_000)
    sections = sections_of(parse_file(path, "line.txt"))
    assert len(sections) == 1 and sections[0].text.endswith("x" * 10)


BLOCK_BOUNDARY_CASES = [
    b"Title line\r\n\r\nfirst \xc3\xa9t\xc3\xa9\r\nsecond\r\r\n\r\n  \t\n\n\nlast\r",
    b"a\r\x00\nb\n \t\x0b\n\x00\nc\xe2\x82\xac d" + b" and ordinary text" * 16 + b"\n\n\n",
    "Grüße\r\n\r\nzwei 中文\n\n\n\ndrei".encode("utf-16"),
    b"\xef\xbb\xbfcaf\xe9 \x80 ok\n\nnext \xe2\x82",
    b"caf\xe9 au lait\r\n\r\ncr\xe8me",
]


@pytest.mark.parametrize("data", BLOCK_BOUNDARY_CASES)
@pytest.mark.parametrize("block_bytes", [1, 2, 3, 5])
def test_text_read_in_small_blocks_parses_as_read_whole(tmp_path, monkeypatch, data, block_bytes):
    path = write(tmp_path, "blocks.txt", data)
    whole = parse_file(path, "blocks.txt")
    expected = (whole.title, whole.metadata, sections_of(whole), decode_text(data))

    monkeypatch.setattr(text_parser, "READ_BLOCK_BYTES", block_bytes)
    in_blocks = parse_file(path, "blocks.txt")

    assert (in_blocks.title, in_blocks.metadata, sections_of(in_blocks), decode_text(data)) == expected


def test_large_text_file_is_read_without_holding_it(tmp_path):
    paragraph = " ".join(["word"] * 150) + "\n\n"
    path = write(tmp_path, "large.txt", paragraph * (16 * 1024 * 1024 // len(paragraph)))
    tracemalloc.start()
    try:
        sections = sum(1 for _ in parse_file(path, "large.txt").sections)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sections == 16 * 1024 * 1024 // len(paragraph)
    # A block of bytes and its text, not the 16 MB file twice.
    assert peak < 8 * 1024 * 1024


# --- markdown --------------------------------------------------------------


def test_markdown_front_matter_gives_the_title_and_stays_out_of_the_text():
    document = parse_file(FIXTURES / "guide.md", "guide.md")
    sections = sections_of(document)
    assert document.title == "Field Guide"
    assert document.metadata["front_matter"] == {"title": "Field Guide", "author": "A. Writer"}
    assert not any("tags:" in section.text or "A. Writer" in section.text for section in sections)
    assert all(section.structure["title"] == "Field Guide" for section in sections)


def test_markdown_heading_paths_follow_atx_and_setext_hierarchy():
    sections = sections_of(parse_file(FIXTURES / "guide.md", "guide.md"))
    by_text = {section.text.strip().splitlines()[0]: section.structure for section in sections}
    assert by_text["Intro paragraph before any heading."]["heading_path"] == []
    assert by_text["Intro paragraph before any heading."]["heading_level"] == 0
    assert by_text["Birds are feathered animals."]["heading_path"] == ["Birds"]
    assert by_text["Text under a setext heading."]["heading_path"] == ["Birds", "Setext Section"]
    assert by_text["Text under a setext heading."]["heading_level"] == 2
    assert by_text["Small seed eaters."]["heading_path"] == ["Birds", "Songbirds", "Finches"]
    assert by_text["Small seed eaters."]["heading_level"] == 3
    assert by_text["Long legs."]["heading_path"] == ["Waders"]
    assert by_text["Long legs."]["heading_level"] == 1


def test_markdown_code_fence_is_atomic_and_its_hash_lines_are_not_headings():
    sections = sections_of(parse_file(FIXTURES / "guide.md", "guide.md"))
    fences = [section for section in sections if section.text.startswith("```")]
    assert len(fences) == 1
    assert fences[0].atomic
    assert "# not a heading" in fences[0].text and fences[0].text.endswith("```")
    assert all("not a heading" not in " ".join(section.structure["heading_path"]) for section in sections)


def test_markdown_pipe_table_is_one_atomic_table_section_with_its_header_apart():
    sections = sections_of(parse_file(FIXTURES / "guide.md", "guide.md"))
    tables = [section for section in sections if section.table_header]
    assert len(tables) == 1 and tables[0].atomic
    assert tables[0].table_header == "| Name | Colour |\n| --- | --- |"
    assert tables[0].text.splitlines() == ["| Robin | red |", "| Crow | black |"]


def test_markdown_empty_heading_is_not_part_of_the_heading_path():
    sections = sections_of(markdown_parser.parse_text("# A\n\n#\n\ntext\n", filename="a.md"))
    assert [section.structure["heading_path"] for section in sections] == [["A"], ["A"]]


def test_markdown_seven_hashes_is_body_text():
    sections = sections_of(parse_file(FIXTURES / "guide.md", "guide.md"))
    seven = next(section for section in sections if "seven hashes" in section.text)
    assert seven.structure["heading_path"] == ["Birds", "Songbirds"]


def test_markdown_heading_attributes_and_closing_hashes_are_trimmed():
    sections = sections_of(parse_file(FIXTURES / "guide.md", "guide.md"))
    paths = {tuple(section.structure["heading_path"]) for section in sections}
    assert ("Birds", "Songbirds") in paths
    assert ("Birds", "Songbirds", "Finches") in paths


def test_markdown_title_falls_back_to_first_h1_then_file_name():
    assert markdown_parser.parse_text("intro\n\n# Real Title\n\ntext", filename="a.md").title == "Real Title"
    assert markdown_parser.parse_text("## Only h2\n\ntext", filename="notes.md").title == "notes"


def test_markdown_unclosed_fence_runs_to_the_end_of_the_file():
    sections = sections_of(markdown_parser.parse_text("# T\n\n```text\nnever closed\n# not heading\n", filename="a.md"))
    assert sections[-1].atomic
    assert sections[-1].text == "```text\nnever closed\n# not heading"
    assert sections[-1].structure["heading_path"] == ["T"]


def test_markdown_fence_inside_quote_and_list_is_recognised():
    text = "# T\n\n> 1. item\n>    ```python\n>    # comment\n>    ```\n\nafter\n"
    sections = sections_of(markdown_parser.parse_text(text, filename="a.md"))
    assert any(section.atomic and "# comment" in section.text for section in sections)
    assert all(section.structure["heading_path"] == ["T"] for section in sections)


def test_markdown_thematic_break_is_not_a_setext_heading_after_a_blank_line():
    sections = sections_of(markdown_parser.parse_text("# T\n\npara\n\n---\n\nmore\n", filename="a.md"))
    assert all(section.structure["heading_path"] == ["T"] for section in sections)


def test_markdown_hostile_nesting_parses_in_linear_time_without_recursion():
    text = (
        "# Top\n\n"
        + "> " * 20_000
        + "deep quote\n\n"
        + "[" * 50_000
        + "]" * 50_000
        + "\n\n"
        + "*" * 30_000
        + "\n\n"
        + "".join("  " * depth + "- item\n" for depth in range(2_000))
        + "## "
        + "# " * 20_000
        + "x\n"
    )
    sections = sections_of(markdown_parser.parse_text(text, filename="nested.md"))
    assert any("deep quote" in section.text for section in sections)


# --- html ------------------------------------------------------------------


def test_html_drops_scripts_styles_navigation_and_hidden_content():
    document = parse_file(FIXTURES / "page.html", "page.html")
    text = "\n".join(section.text for section in sections_of(document))
    assert document.file_type == "html"
    assert document.title == "Sample Page"
    for boilerplate in (
        "color: red",
        "not content",
        "Navigation link",
        "Table of contents entry",
        "hidden text",
        "a comment",
    ):
        assert boilerplate not in text
    assert "First paragraph with bold text\nand a line break." in text


def test_html_heading_hierarchy_matches_markdown():
    sections = sections_of(parse_file(FIXTURES / "page.html", "page.html"))
    paths = {section.text: section.structure["heading_path"] for section in sections}
    assert paths["Paragraph in A."] == ["Main Title", "Section A"]
    assert paths["one"] == ["Main Title", "Section B"]
    levels = {section.text: section.structure["heading_level"] for section in sections}
    assert levels["Subsection A.1"] == 3


def test_html_pre_block_is_atomic_and_keeps_its_whitespace():
    sections = sections_of(parse_file(FIXTURES / "page.html", "page.html"))
    pre = next(section for section in sections if section.text.startswith("def keep"))
    assert pre.atomic
    assert pre.text == 'def keep():\n    return "indent"'


def test_html_table_is_rendered_as_markdown_rows_under_its_header():
    sections = sections_of(parse_file(FIXTURES / "page.html", "page.html"))
    table = next(section for section in sections if section.table_header)
    assert table.atomic
    assert table.table_header == "| Key | Value |\n| --- | --- |"
    assert table.text == "| alpha | 1 |"
    assert table.structure["heading_path"] == ["Main Title", "Section A", "Subsection A.1"]


def test_html_nested_deeper_than_libxml2_allows_is_still_read():
    markup = (
        "<html><head><title>Deep</title></head><body>"
        + "<div>" * 5_000
        + "deep text"
        + "</div>" * 5_000
        + "<h2>Later</h2><p>after<br>break</p><script>hidden()</script><pre>a\n  b</pre></body></html>"
    )
    document = parse_html_text(markup, filename="deep.html")
    sections = sections_of(document)
    assert document.title == "Deep"
    assert [section.text for section in sections] == ["deep text", "Later", "after\nbreak", "a\n  b"]
    assert sections[-1].atomic
    assert sections[-1].structure["heading_path"] == ["Later"]


# --- pdf -------------------------------------------------------------------


def test_pdf_yields_one_section_per_page_with_page_numbers(tmp_path):
    path = write(tmp_path, "doc.pdf", minimal_pdf(["First page text.", "", "Third page text."]))
    document = parse_file(path, "doc.pdf")
    sections = sections_of(document)
    assert document.file_type == "pdf"
    assert [(section.structure["page"], section.text) for section in sections] == [
        (1, "First page text."),
        (3, "Third page text."),
    ]
    assert all(section.structure["title"] == "doc" for section in sections)
    assert document.metadata["page_count"] == 3
    assert document.metadata["pages_without_text"] == 1


@requires_tesseract("eng")
def test_pdf_whose_pages_are_blank_even_to_ocr_has_no_extractable_text(tmp_path):
    document = parse_file(write(tmp_path, "scan.pdf", minimal_pdf(["", ""])), "scan.pdf")
    with pytest.raises(ParseError, match=r"^no extractable text: no page has a usable text layer, and OCR found"):
        sections_of(document)
    assert document.metadata["pages_without_text"] == 2 and document.metadata["pages_ocr"] == 0


def test_truncated_pdf_fails_with_a_clear_reason_not_a_hang(tmp_path):
    data = minimal_pdf(["Some text."])
    path = write(tmp_path, "cut.pdf", data[: len(data) // 3])
    with pytest.raises(ParseError, match="PDF"):
        sections_of(parse_file(path, "cut.pdf"))


def test_pdf_from_the_corpus_keeps_its_pages():
    path = CORPUS / "pdf" / "pdflatex-4-pages.pdf"
    require(path)
    sections = sections_of(parse_file(path, path.name))
    assert [section.structure["page"] for section in sections] == [1, 2, 3, 4]
    assert sections[0].text.startswith("Hello, here is some text without a meaning.")


def test_encrypted_pdf_without_password_fails_clearly():
    path = CORPUS / "pdf" / "libreoffice-writer-password.pdf"
    require(path)
    with pytest.raises(ParseError) as caught:
        parse_file(path, path.name)
    assert str(caught.value) == ENCRYPTED_MESSAGE
    assert str(caught.value).startswith("PDF is encrypted")


def test_no_text_message_is_the_documented_one():
    assert NO_TEXT_MESSAGE == "no extractable text: no page has a usable text layer, and OCR found no text on any page"


# --- epub ------------------------------------------------------------------


def test_epub3_chapters_follow_the_spine_with_nav_titles(tmp_path):
    data = build_epub(
        {
            "c2.xhtml": xhtml("<h1>Heading Two</h1><p>Second chapter.</p>"),
            "c1.xhtml": xhtml("<h1>Heading One</h1><p>First chapter.</p><pre>code  kept</pre>"),
        },
        spine=["c1.xhtml", "c2.xhtml"],
        nav=nav_document([("c1.xhtml", "Chapter One"), ("c2.xhtml", "Chapter Two")]),
    )
    document = parse_file(write(tmp_path, "book.epub", data), "book.epub")
    sections = sections_of(document)
    assert document.file_type == "epub"
    assert document.title == "Test Book"
    assert document.metadata["creator"] == "Test Author"
    assert [
        (section.structure["chapter_index"], section.structure["chapter"], section.text) for section in sections
    ] == [
        (1, "Chapter One", "Heading One"),
        (1, "Chapter One", "First chapter."),
        (1, "Chapter One", "code  kept"),
        (2, "Chapter Two", "Heading Two"),
        (2, "Chapter Two", "Second chapter."),
    ]
    assert sections[2].atomic
    assert all(section.structure["title"] == "Test Book" for section in sections)


def test_epub2_single_file_book_is_split_into_chapters_at_ncx_anchors(tmp_path):
    body = (
        "<h1>The Book</h1><p>Front matter.</p>"
        '<h2 id="ch1">I. Beginning</h2><p>Once upon a time.</p>'
        '<h2 id="ch2">II. Ending</h2><p>The end.</p>'
    )
    ncx = (
        '<?xml version="1.0"?><ncx xmlns="http://www.daisy.org/z3986/2005/ncx/" version="2005-1">'
        "<docTitle><text>The Book</text></docTitle><navMap>"
        '<navPoint id="n1"><navLabel><text>Chapter I</text></navLabel><content src="book.xhtml#ch1"/></navPoint>'
        '<navPoint id="n2"><navLabel><text>Chapter II</text></navLabel><content src="book.xhtml#ch2"/></navPoint>'
        "</navMap></ncx>"
    )
    data = build_epub({"book.xhtml": xhtml(body)}, ["book.xhtml"], ncx=ncx)
    sections = sections_of(parse_file(write(tmp_path, "book.epub", data), "book.epub"))
    chapters = [
        (section.structure["chapter_index"], section.structure["chapter"], section.text) for section in sections
    ]
    assert chapters == [
        (1, "The Book", "The Book"),
        (1, "The Book", "Front matter."),
        (2, "Chapter I", "I. Beginning"),
        (2, "Chapter I", "Once upon a time."),
        (3, "Chapter II", "II. Ending"),
        (3, "Chapter II", "The end."),
    ]


def test_epub_without_navigation_splits_a_whole_book_file_at_repeated_headings(tmp_path):
    body = "<h1>Title</h1><h2>One</h2><p>a</p><h2>Two</h2><p>b</p>"
    data = build_epub({"book.xhtml": xhtml(body)}, ["book.xhtml"])
    sections = sections_of(parse_file(write(tmp_path, "book.epub", data), "book.epub"))
    assert [(section.structure["chapter"], section.text) for section in sections] == [
        ("Title", "Title"),
        ("One", "One"),
        ("One", "a"),
        ("Two", "Two"),
        ("Two", "b"),
    ]


def test_epub_bare_ordinal_chapter_labels_include_their_parent(tmp_path):
    nav = xhtml(
        '<nav epub:type="toc"><ol><li><a href="story.xhtml">A Story</a><ol>'
        '<li><a href="story.xhtml#p1">I</a></li><li><a href="story.xhtml#p2">II</a></li>'
        "</ol></li></ol></nav>"
    )
    body = '<h2>A Story</h2><h3 id="p1">I</h3><p>first</p><h3 id="p2">II</h3><p>second</p>'
    data = build_epub({"story.xhtml": xhtml(body)}, ["story.xhtml"], nav=nav)
    sections = sections_of(parse_file(write(tmp_path, "s.epub", data), "s.epub"))
    assert [section.structure["chapter"] for section in sections if section.text in ("first", "second")] == [
        "A Story — I",
        "A Story — II",
    ]


def test_epub_tolerates_a_manifest_item_missing_from_the_archive(tmp_path):
    data = build_epub(
        {"c1.xhtml": xhtml("<p>Present.</p>", title="Opening")},
        spine=["c1.xhtml", "gone.xhtml"],
        listed_but_missing=("gone.xhtml",),
    )
    document = parse_file(write(tmp_path, "book.epub", data), "book.epub")
    sections = sections_of(document)
    assert [section.text for section in sections] == ["Present."]
    assert sections[0].structure["chapter"] == "Opening"
    assert document.metadata["missing_items"] == ["OEBPS/gone.xhtml"]


def test_epub_whose_chapters_are_all_missing_fails_clearly(tmp_path):
    data = build_epub({}, spine=["gone.xhtml"], listed_but_missing=("gone.xhtml",))
    document = parse_file(write(tmp_path, "book.epub", data), "book.epub")
    with pytest.raises(ParseError, match="none of its chapters are in the archive"):
        sections_of(document)


def test_truncated_epub_fails_with_a_clear_message(tmp_path):
    data = build_epub({"c1.xhtml": xhtml("<p>" + "text " * 2000 + "</p>")}, ["c1.xhtml"])
    path = write(tmp_path, "cut.epub", data[: len(data) // 2])
    with pytest.raises(ParseError, match="EPUB is damaged or truncated"):
        parse_file(path, "cut.epub")


def test_epub_entry_over_the_size_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(epub, "MAX_ENTRY_BYTES", 1_000)
    data = build_epub({"c1.xhtml": xhtml("<p>" + "a" * 5_000 + "</p>")}, ["c1.xhtml"])
    document = parse_file(write(tmp_path, "bomb.epub", data), "bomb.epub")
    with pytest.raises(ParseError, match="over the .* limit"):
        sections_of(document)


def test_epub_total_expansion_over_the_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(epub, "MAX_TOTAL_BYTES", 3_000)
    files = {f"c{index}.xhtml": xhtml("<p>" + "b" * 1_000 + "</p>") for index in range(5)}
    data = build_epub(files, list(files))
    with pytest.raises(ParseError, match="refusing to unpack"):
        sections_of(parse_file(write(tmp_path, "bomb.epub", data), "bomb.epub"))


def test_epub_with_a_container_but_no_package_file_fails_clearly(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo("mimetype"), "application/epub+zip")
        archive.writestr("META-INF/container.xml", CONTAINER_XML)
    with pytest.raises(ParseError, match="package file OEBPS/content.opf is missing"):
        parse_file(write(tmp_path, "book.epub", buffer.getvalue()), "book.epub")
