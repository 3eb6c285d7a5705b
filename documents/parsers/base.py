"""Types shared by every parser. Plain Python: bytes in, sections out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field


class ParseError(Exception):
    """The file cannot be turned into text. The message is shown to users as
    the document's `error_message`, so it must be human-readable."""


class UnsupportedFileType(ParseError):
    """The content is not one of the supported formats (whatever its name says)."""

    def __init__(self, message: str, *, detected_type: str) -> None:
        super().__init__(message)
        self.detected_type = detected_type


@dataclass(frozen=True)
class Section:
    """A run of text that shares one place in the document's structure.

    `structure` keys, by format:
      markdown/html: title, heading_path (list of headings), heading_level
      pdf: page (1-based), title
      epub: chapter (title), chapter_index (1-based, reading order: spine
            order, with a spine file that holds several chapters split), title
      text: title
      docx/odt: title, heading_path, heading_level (as markdown)
      pptx/odp: title (the document's), slide (1-based), slide_title;
            speaker notes come as sections of their own with notes: True
      xlsx/ods: title, sheet (the sheet's name)
      pdf pages read by OCR add ocr: True and ocr_confidence (Tesseract's
            mean word confidence, 0-100)
    """

    text: str
    structure: dict = field(default_factory=dict)
    # Code blocks and table rows: the chunker keeps them whole where they fit.
    atomic: bool = False
    # Tables: the header row and delimiter line in Markdown (see tables.py);
    # `text` then holds only body rows, and consecutive sections with the
    # same header are one table. The chunker repeats the header at the top
    # of every chunk that continues the table.
    table_header: str | None = None


@dataclass
class ParsedDocument:
    file_type: str
    title: str | None
    sections: Iterator[Section]
    metadata: dict = field(default_factory=dict)
