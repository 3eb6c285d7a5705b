"""Plain text: lenient decoding, paragraphs as sections."""
from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .base import ParsedDocument, Section

# Titles come from the first line; a runaway first line must not become a
# megabyte-long title.
MAX_TITLE_CHARS = 200

_BOM_ENCODINGS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# Any well-formed UTF-8 multi-byte sequence. Text with invalid bytes and none
# of these was written in a legacy single-byte encoding, not damaged UTF-8.
_UTF8_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]"
    rb"|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
    rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\f\v]*\n\s*")


@dataclass(frozen=True)
class DecodedText:
    text: str
    # "utf-8", "utf-16-le", "windows-1252", ...
    encoding: str
    # Bytes that could not be decoded and became U+FFFD.
    replaced: int


def decode_text(data: bytes) -> DecodedText:
    """Decode bytes that are meant to be text, never failing.

    UTF-8 by default (a BOM selects UTF-8/16/32); invalid bytes become U+FFFD
    so the valid text around them survives; text with invalid bytes but no
    valid UTF-8 multi-byte sequence is read as Windows-1252. NUL characters
    are removed and line endings normalised to "\\n"."""
    encoding = "utf-8"
    for bom, bom_encoding in _BOM_ENCODINGS:
        if data.startswith(bom):
            data = data[len(bom) :]
            encoding = bom_encoding
            break
    if encoding == "utf-8":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            if _UTF8_MULTIBYTE.search(data) is None:
                encoding = "windows-1252"
            text = data.decode(encoding, errors="replace")
    else:
        text = data.decode(encoding, errors="replace")
    replaced = text.count("\ufffd")
    return DecodedText(text=normalise_text(text), encoding=encoding, replaced=replaced)


def normalise_text(text: str) -> str:
    """Strip NULs and turn CRLF / CR line endings into LF."""
    if "\x00" in text:
        text = text.replace("\x00", "")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def title_from_filename(filename: str) -> str:
    return Path(filename).stem or filename


def first_line_title(text: str) -> str | None:
    for match in re.finditer(r"[^\n]+", text):
        line = match.group().strip()
        if line:
            return line[:MAX_TITLE_CHARS]
    return None


def parse(path: Path, filename: str) -> ParsedDocument:
    decoded = decode_text(path.read_bytes())
    return parse_text(decoded.text, filename=filename, metadata=_encoding_metadata(decoded))


def parse_text(text: str, *, filename: str, metadata: dict | None = None) -> ParsedDocument:
    """Paragraphs (runs of lines between blank lines) become sections."""
    text = normalise_text(text)
    title = first_line_title(text) or title_from_filename(filename)
    structure = {"title": title}
    return ParsedDocument(
        file_type="text",
        title=title,
        sections=_paragraph_sections(text, structure),
        metadata=dict(metadata or {}),
    )


def _paragraph_sections(text: str, structure: dict) -> Iterator[Section]:
    start = 0
    for match in _PARAGRAPH_BREAK.finditer(text):
        paragraph = text[start : match.start()]
        start = match.end()
        if paragraph.strip():
            yield Section(text=paragraph.strip("\n").rstrip(), structure=structure)
    paragraph = text[start:]
    if paragraph.strip():
        yield Section(text=paragraph.strip("\n").rstrip(), structure=structure)


def _encoding_metadata(decoded: DecodedText) -> dict:
    metadata = {"encoding": decoded.encoding}
    if decoded.replaced:
        metadata["replaced_characters"] = decoded.replaced
    return metadata
