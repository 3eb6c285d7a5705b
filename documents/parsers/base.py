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
    """

    text: str
    structure: dict = field(default_factory=dict)
    # Code blocks and table rows: the chunker keeps them whole where they fit.
    atomic: bool = False


@dataclass
class ParsedDocument:
    file_type: str
    title: str | None
    sections: Iterator[Section]
    metadata: dict = field(default_factory=dict)
