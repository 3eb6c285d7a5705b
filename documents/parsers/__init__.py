"""Turn uploaded files into sections of text. Plain Python: no models, no
Celery.

    document = parse_file(path, filename)      # may raise ParseError
    for section in document.sections:          # lazy; may raise ParseError
        ...

`parse_file` detects the format from the content, opens the file and fails
early for what can be seen at once (empty, wrong type, encrypted, damaged
container). Sections are produced lazily so large PDFs are read page by
page; a problem found only while reading (no text layer at all) raises
ParseError from the iteration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import docx, epub, html, markdown, odf, pdf, pptx, text, xlsx
from .base import ParsedDocument, ParseError, Section, UnsupportedFileType
from .detect import HEAD_SIZE, detect_type

FILE_TYPES = ("markdown", "pdf", "epub", "text", "html", "docx", "pptx", "xlsx", "odt", "odp", "ods")

_PARSERS: dict[str, Callable[[Path, str], ParsedDocument]] = {
    "markdown": markdown.parse,
    "pdf": pdf.parse,
    "epub": epub.parse,
    "text": text.parse,
    "html": html.parse,
    "docx": docx.parse,
    "pptx": pptx.parse,
    "xlsx": xlsx.parse,
    "odt": odf.parse,
    "odp": odf.parse,
    "ods": odf.parse,
}


def parse_file(path: Path, filename: str) -> ParsedDocument:
    """Parse the file at `path`; `filename` is the name it was uploaded
    under (its extension only chooses between markdown, HTML and text, and
    names an Office package whose parts the head does not show).

    Raises ParseError (user-readable message) or its subclass
    UnsupportedFileType. OSError from reading `path` propagates: that is the
    caller's storage failing, not the document."""
    path = Path(path)
    with path.open("rb") as file:
        head = file.read(HEAD_SIZE)
    file_type = detect_type(head, filename)
    return _PARSERS[file_type](path, filename)


__all__ = [
    "FILE_TYPES",
    "HEAD_SIZE",
    "ParseError",
    "ParsedDocument",
    "Section",
    "UnsupportedFileType",
    "detect_type",
    "parse_file",
]
