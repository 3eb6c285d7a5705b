"""Plain text: lenient decoding, paragraphs as sections.

A text file is read block by block: the parser holds one block and the
paragraph being read, never the whole file."""

from __future__ import annotations

import codecs
import io
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import BinaryIO

from .base import ParsedDocument, Section

# Titles come from the first line; a runaway first line must not become a
# megabyte-long title.
MAX_TITLE_CHARS = 200
READ_BLOCK_BYTES = 1024 * 1024

_BOM_ENCODINGS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_LONGEST_BOM = 4
# Any well-formed UTF-8 multi-byte sequence. Text with invalid bytes and none
# of these was written in a legacy single-byte encoding, not damaged UTF-8.
_UTF8_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]"
    rb"|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
    rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)
_LONGEST_UTF8_SEQUENCE = 4
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\f\v]*\n\s*")

# Opens the bytes to decode, from their start, each time it is called.
BinaryOpener = Callable[[], BinaryIO]


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
    open_data = partial(io.BytesIO, data)
    encoding, bom_length = _text_encoding(open_data)
    text = "".join(_normalised_blocks(_decoded_blocks(open_data, encoding, bom_length)))
    return DecodedText(text=text, encoding=encoding, replaced=text.count("\ufffd"))


def _text_encoding(open_binary: BinaryOpener) -> tuple[str, int]:
    """The encoding `decode_text` reads the bytes with, and the length of the
    byte order mark to skip. Reads the bytes in blocks (twice at most)."""
    with open_binary() as source:
        head = source.read(_LONGEST_BOM)
    bom, encoding = next(((bom, encoding) for bom, encoding in _BOM_ENCODINGS if head.startswith(bom)), (b"", "utf-8"))
    if (
        encoding == "utf-8"
        and not _is_utf8(_raw_blocks(open_binary, len(bom)))
        and not _has_utf8_multibyte(_raw_blocks(open_binary, len(bom)))
    ):
        encoding = "windows-1252"
    return encoding, len(bom)


def _decoded_blocks(open_binary: BinaryOpener, encoding: str, skip: int) -> Iterator[str]:
    """The text after the first `skip` bytes, decoded block by block; bytes
    that cannot be decoded become U+FFFD."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
    for block in _raw_blocks(open_binary, skip):
        yield decoder.decode(block)
    yield decoder.decode(b"", final=True)


def _normalised_blocks(blocks: Iterable[str]) -> Iterator[str]:
    """`normalise_text` applied to text arriving in blocks, with a CR LF
    split between two blocks still read as one line end."""
    held = ""
    for block in blocks:
        text = held + block.replace("\x00", "")
        # A CR at the end of a block may be the first half of a CR LF.
        held = "\r" if text.endswith("\r") else ""
        text = normalise_text(text[: len(text) - len(held)])
        if text:
            yield text
    if held:
        yield "\n"


def _raw_blocks(open_binary: BinaryOpener, skip: int) -> Iterator[bytes]:
    with open_binary() as source:
        source.seek(skip)
        while block := source.read(READ_BLOCK_BYTES):
            yield block


def _is_utf8(blocks: Iterable[bytes]) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    try:
        for block in blocks:
            decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _has_utf8_multibyte(blocks: Iterable[bytes]) -> bool:
    tail = b""
    for block in blocks:
        # A sequence may straddle two blocks.
        window = tail + block
        if _UTF8_MULTIBYTE.search(window):
            return True
        tail = window[-(_LONGEST_UTF8_SEQUENCE - 1) :]
    return False


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
    open_file = partial(Path(path).open, "rb")
    encoding, bom_length = _text_encoding(open_file)
    # Counted in a pass of its own so that the metadata is complete before
    # the sections are read.
    replaced = sum(block.count("\ufffd") for block in _decoded_blocks(open_file, encoding, bom_length))
    paragraphs = _paragraphs(_normalised_blocks(_decoded_blocks(open_file, encoding, bom_length)))
    return _parsed(paragraphs, filename=filename, metadata=_encoding_metadata(encoding, replaced))


def parse_text(text: str, *, filename: str, metadata: dict | None = None) -> ParsedDocument:
    """Paragraphs (runs of lines between blank lines) become sections."""
    return _parsed(_paragraphs([normalise_text(text)]), filename=filename, metadata=metadata)


def _parsed(paragraphs: Iterator[str], *, filename: str, metadata: dict | None) -> ParsedDocument:
    # The first paragraph holds the first line, which names every section.
    first = next(paragraphs, None)
    title = first_line_title(first or "") or title_from_filename(filename)
    structure = {"title": title}
    read = paragraphs if first is None else itertools.chain([first], paragraphs)
    return ParsedDocument(
        file_type="text",
        title=title,
        sections=(Section(text=paragraph, structure=structure) for paragraph in read),
        metadata=dict(metadata or {}),
    )


def _paragraphs(blocks: Iterable[str]) -> Iterator[str]:
    """The non-blank paragraphs of text arriving in blocks, each trimmed of
    surrounding newlines and trailing whitespace. Holds only the paragraph
    being read."""
    pending = ""
    # Where the next paragraph break can begin: text before it was searched.
    search_from = 0
    for block in blocks:
        pending += block
        start = 0
        next_search = None
        for match in _PARAGRAPH_BREAK.finditer(pending, search_from):
            if match.end() == len(pending):
                # The break's blank run may go on in the next block.
                next_search = match.start()
                break
            yield from _paragraph(pending[start : match.start()])
            start = match.end()
        if next_search is None:
            # Only the last line end can still open a break.
            last_line_end = pending.rfind("\n", max(start, search_from))
            next_search = last_line_end if last_line_end >= 0 else len(pending)
        pending, search_from = pending[start:], next_search - start
    yield from _paragraph(pending)


def _paragraph(text: str) -> Iterator[str]:
    if text.strip():
        yield text.strip("\n").rstrip()


def _encoding_metadata(encoding: str, replaced: int) -> dict:
    metadata = {"encoding": encoding}
    if replaced:
        metadata["replaced_characters"] = replaced
    return metadata
