"""PDF text layers, page by page (pypdf); pages without a usable text
layer are read by OCR (ocr.py)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError

from . import ocr
from .base import ParsedDocument, ParseError, Section
from .pdf_tables import TableFinder
from .text import MAX_TITLE_CHARS, normalise_text, title_from_filename

logger = logging.getLogger(__name__)

NO_TEXT_MESSAGE = "no extractable text: no page has a usable text layer, and OCR found no text on any page"
ENCRYPTED_MESSAGE = "PDF is encrypted and needs a password to open; upload a copy without password protection"

# Producers often store the source file name as the title ("Binder1.pdf",
# "Microsoft Word - report.doc"); the upload's own name is better then.
_FILENAME_TITLE = re.compile(r"\.(?:pdf|docx?|odt|rtf|txt|tex|dvi|ps|html?|xlsx?|pptx?)$|^Microsoft \w+ - ", re.I)
_SPACE_RUNS = re.compile(r"[ \t\f\v\u00a0]+")
_BLANK_LINE_RUNS = re.compile(r"\n\s*\n\s*")
# Typographic ligatures from TeX fonts would otherwise split words for
# search and tokenizers ("Auﬂage").
_LIGATURES = str.maketrans({"ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "st", "ﬆ": "st"})


def parse(path: Path, filename: str) -> ParsedDocument:
    """One section per page with text, {"page": n (1-based), "title"};
    pages read by OCR add {"ocr": True, "ocr_confidence": 0-100}. A page
    with ruled tables (pdf_tables.py) becomes its text and its tables in
    reading order, each table as Markdown rows under a repeated header.

    Opening (header, cross-reference table, encryption) happens here, so a
    damaged or encrypted file fails before any section is read. Pages are
    extracted lazily; a page whose text layer is missing or garbage (see
    ocr.text_layer_quality) is rendered and read by Tesseract. Iterating
    raises ParseError when no page yields text, or when a page needs OCR
    and Tesseract is not installed (the message says what to install).
    Pages whose extraction fails are skipped and counted in
    `metadata["pages_failed"]`; OCR'd pages in `metadata["pages_ocr"]`."""
    reader = _open(path)
    try:
        page_count = len(reader.pages)
    except Exception as error:  # pypdf raises many types for damaged page trees
        raise ParseError(f"PDF is damaged: its page list cannot be read ({_reason(error)})") from error
    if page_count == 0:
        raise ParseError("PDF has no pages")
    title = _title(reader) or title_from_filename(filename)
    metadata = {"page_count": page_count, "pages_without_text": 0, "pages_failed": 0, "pages_ocr": 0}
    return ParsedDocument(
        file_type="pdf",
        title=title,
        sections=_page_sections(reader, path, page_count, title, metadata),
        metadata=metadata,
    )


def _open(path: Path) -> PdfReader:
    try:
        # strict=False rebuilds a broken cross-reference table by scanning the
        # file, which recovers most damaged-but-complete PDFs.
        reader = PdfReader(path, strict=False)
    except FileNotDecryptedError as error:
        raise ParseError(ENCRYPTED_MESSAGE) from error
    except Exception as error:  # pypdf raises many types for damaged files
        raise ParseError(f"PDF is damaged or truncated and cannot be read ({_reason(error)})") from error
    if reader.is_encrypted:
        _decrypt_without_password(reader)
    return reader


def _decrypt_without_password(reader: PdfReader) -> None:
    """Files protected only by an owner password (printing/copying limits)
    open with the empty user password; anything else needs the user's."""
    try:
        opened = reader.decrypt("")
    except DependencyError as error:
        # AES files need an optional crypto backend even to try the empty
        # password; without one the file cannot be opened either way.
        raise ParseError(ENCRYPTED_MESSAGE) from error
    except Exception as error:
        raise ParseError(f"{ENCRYPTED_MESSAGE} ({_reason(error)})") from error
    if not opened:
        raise ParseError(ENCRYPTED_MESSAGE)


def _title(reader: PdfReader) -> str | None:
    try:
        title = reader.metadata.title if reader.metadata else None
    except Exception:  # noqa: BLE001 - a damaged info dictionary only costs the title
        return None
    if not isinstance(title, str):
        return None
    title = " ".join(title.split())
    if not title or _FILENAME_TITLE.search(title):
        return None
    return title[:MAX_TITLE_CHARS]


def _page_sections(reader: PdfReader, path: Path, page_count: int, title: str, metadata: dict) -> Iterator[Section]:
    yielded = False
    page_reader = ocr.PageReader(path)
    tables = TableFinder(path)
    try:
        for index in range(page_count):
            failed = False
            try:
                text = _clean(reader.pages[index].extract_text() or "")
            except Exception as error:  # noqa: BLE001 - one bad content stream must not lose the rest
                logger.warning("PDF page %d text extraction failed: %s", index + 1, _reason(error))
                text = ""
                failed = True
            quality = ocr.text_layer_quality(text)
            structure = {"page": index + 1, "title": title}
            # A short clean text layer over a picture is a scanner's stamp
            # (a page number, "Scanned by ..."); without a picture it is the
            # page's whole text.
            if not quality.clean or (not quality.usable and _has_images(reader, index)):
                recognised = _ocr_page(page_reader, index)
                failed = failed or recognised is None
                if recognised is not None and recognised.text.strip():
                    metadata["pages_ocr"] += 1
                    text = _clean(recognised.text)
                    structure.update(ocr=True, ocr_confidence=recognised.confidence)
                elif not quality.clean:
                    # A short but clean text layer (a page number) is kept;
                    # garbage is not.
                    text = ""
            if not text:
                metadata["pages_failed" if failed else "pages_without_text"] += 1
                continue
            yielded = True
            laid_out = None if structure.get("ocr") else tables.page_sections(index, structure=structure, clean=_clean)
            if laid_out:
                metadata["tables"] = metadata.get("tables", 0) + sum(1 for part in laid_out if part.table_header)
                yield from laid_out
            else:
                yield Section(text=text, structure=structure)
    finally:
        page_reader.close()
        tables.close()
    if not yielded:
        if metadata["pages_failed"] and not metadata["pages_without_text"]:
            raise ParseError("PDF is damaged: text could not be extracted from any page")
        raise ParseError(NO_TEXT_MESSAGE)


def _has_images(reader: PdfReader, index: int) -> bool:
    try:
        return _resources_hold_images(reader.pages[index].get("/Resources"), depth=0)
    except Exception:  # noqa: BLE001 - damaged resources: let OCR look at the page
        return True


def _resources_hold_images(resources, *, depth: int) -> bool:
    resources = resources.get_object() if resources is not None else None
    if not resources or depth > 3:
        return False
    x_objects = resources.get("/XObject")
    x_objects = x_objects.get_object() if x_objects is not None else {}
    for reference in x_objects.values():
        x_object = reference.get_object()
        subtype = x_object.get("/Subtype")
        if subtype == "/Image":
            return True
        if subtype == "/Form" and _resources_hold_images(x_object.get("/Resources"), depth=depth + 1):
            return True
    return False


def _ocr_page(page_reader: ocr.PageReader, index: int) -> ocr.OcrPage | None:
    try:
        return page_reader.read(index)
    except ocr.PageRenderError as error:
        logger.warning("PDF page %d OCR failed: %s", index + 1, error)
        return None


def _clean(text: str) -> str:
    text = normalise_text(text).translate(_LIGATURES)
    lines = (_SPACE_RUNS.sub(" ", line).strip() for line in text.split("\n"))
    text = "\n".join(lines)
    return _BLANK_LINE_RUNS.sub("\n\n", text).strip()


def _reason(error: Exception) -> str:
    return str(error).strip().rstrip(".") or type(error).__name__
