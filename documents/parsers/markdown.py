"""Markdown, read by a line scanner.

A full CommonMark parser builds a nested tree and can recurse once per
blockquote or bracket level; hostile files nest thousands deep. Chunking only
needs headings, fenced code, tables and paragraphs, all of which are visible
line by line, so each line is looked at a bounded number of times and nothing
recurses."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .base import ParsedDocument, Section
from .tables import table_sections
from .text import MAX_TITLE_CHARS, decode_text, normalise_text, title_from_filename

# Front matter longer than this is not front matter but a document that
# happens to start with a thematic break.
_MAX_FRONT_MATTER_LINES = 500

_ATX_OPEN = re.compile(r" {0,3}(#{1,6})(?=[ \t]|$)")
# MkDocs / Pandoc heading attributes: "## Title { #anchor }".
_HEADING_ATTRIBUTES = re.compile(r"\{[ \t]*[#.][^{}]*\}$")
# Heading text beyond this is cut before any trimming, which keeps every
# pattern on it cheap (a heading can be a megabyte-long line).
_MAX_HEADING_SCAN = 4 * MAX_TITLE_CHARS
_SETEXT_UNDERLINE = re.compile(r" {0,3}(=+|-+)[ \t]*$")
_THEMATIC_BREAK = re.compile(r" {0,3}(?:(?:-[ \t]*){3,}|(?:\*[ \t]*){3,}|(?:_[ \t]*){3,})$")
# Quote markers and indentation ahead of a fence (fences inside lists and
# quotes still delimit code).
_FENCE_PREFIX = re.compile(r"[ \t>]*")
_FENCE = re.compile(r"(`{3,}|~{3,})")
_TABLE_DELIMITER_CELL = re.compile(r":?-+:?")
_UNESCAPED_PIPE = re.compile(r"(?<!\\)\|")
# Lines that cannot be the text of a setext heading.
_NOT_SETEXT_TEXT = re.compile(r"[ \t]*(?:[-*+>|<]|\d{1,9}[.)])")
_FRONT_MATTER_KEY = re.compile(r"([A-Za-z0-9_-]+)[ \t]*:[ \t]*(.*)$")


@dataclass(frozen=True)
class _Heading:
    level: int
    text: str
    line: str


@dataclass(frozen=True)
class _Body:
    text: str
    atomic: bool = False
    # Pipe tables: their rows of cells, header first.
    rows: tuple[tuple[str, ...], ...] = ()


def parse(path: Path, filename: str) -> ParsedDocument:
    decoded = decode_text(path.read_bytes())
    metadata = {"encoding": decoded.encoding}
    if decoded.replaced:
        metadata["replaced_characters"] = decoded.replaced
    return parse_text(decoded.text, filename=filename, metadata=metadata)


def parse_text(text: str, *, filename: str, metadata: dict | None = None) -> ParsedDocument:
    """Sections carry {"title", "heading_path", "heading_level"}; fenced code
    and pipe tables come as atomic sections. The title is the front matter
    `title`, else the first level-1 heading, else the file name."""
    lines = normalise_text(text).split("\n")
    front_matter, body_start = _front_matter(lines)
    # The lines are scanned again for the sections rather than kept as
    # blocks: a second copy of the whole text.
    title = front_matter.get("title") or _first_h1(_scan(lines, body_start)) or title_from_filename(filename)
    metadata = dict(metadata or {})
    if front_matter:
        metadata["front_matter"] = front_matter
    return ParsedDocument(
        file_type="markdown",
        title=title,
        sections=_sections(_scan(lines, body_start), title),
        metadata=metadata,
    )


def _front_matter(lines: list[str]) -> tuple[dict, int]:
    """Top-level scalar keys of a YAML front matter block, and the index of
    the first body line. Nested values are skipped: only titles and similar
    labels are of use downstream."""
    if not lines or lines[0].rstrip() != "---":
        return {}, 0
    for index in range(1, min(len(lines), _MAX_FRONT_MATTER_LINES)):
        if lines[index].rstrip() in ("---", "..."):
            values = {}
            for line in lines[1:index]:
                match = _FRONT_MATTER_KEY.match(line)
                if match and match.group(2).strip():
                    values[match.group(1)] = _unquote(match.group(2).strip())
            return values, index + 1
    return {}, 0


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def _first_h1(blocks: Iterable[_Heading | _Body]) -> str | None:
    for block in blocks:
        if isinstance(block, _Heading) and block.level == 1 and block.text:
            return block.text[:MAX_TITLE_CHARS]
    return None


def _scan(lines: list[str], start: int) -> Iterator[_Heading | _Body]:
    """Headings and runs of body text / code / tables, in order."""
    # Body lines already known to be plain text, then the paragraph still
    # open (it may yet turn into a setext heading or a table header).
    text_lines: list[str] = []
    paragraph: list[str] = []
    index = start
    line_count = len(lines)

    def flush_text() -> Iterator[_Body]:
        text_lines.extend(paragraph)
        paragraph.clear()
        body = "\n".join(text_lines)
        text_lines.clear()
        if body.strip():
            yield _Body(body)

    while index < line_count:
        line = lines[index]
        stripped = line.strip()

        if not stripped:
            text_lines.extend(paragraph)
            paragraph.clear()
            text_lines.append("")
            index += 1
            continue

        fence = _fence_opening(line)
        if fence is not None:
            yield from flush_text()
            end = _fence_end(lines, index + 1, fence)
            code = "\n".join(lines[index : end + 1]).strip("\n")
            yield _Body(code, atomic=True)
            index = end + 1
            continue

        atx = _ATX_OPEN.match(line)
        if atx is not None:
            heading_text = _heading_text(line[atx.end() :])
            if heading_text:
                yield from flush_text()
                yield _Heading(level=len(atx.group(1)), text=heading_text, line=stripped)
            else:
                # An empty heading ("#" alone) names nothing; it only
                # separates paragraphs.
                text_lines.extend(paragraph)
                paragraph.clear()
                text_lines.append("")
            index += 1
            continue

        if paragraph and _SETEXT_UNDERLINE.match(line) and not _NOT_SETEXT_TEXT.match(paragraph[0]):
            heading_lines = paragraph.copy()
            paragraph.clear()
            yield from flush_text()
            level = 1 if stripped.startswith("=") else 2
            heading_text = _heading_text(" ".join(part.strip() for part in heading_lines))
            yield _Heading(level=level, text=heading_text, line="\n".join(heading_lines + [line]).strip())
            index += 1
            continue

        if paragraph and "|" in paragraph[-1] and _is_table_delimiter(line):
            header = paragraph.pop()
            yield from flush_text()
            end = index + 1
            while end < line_count and "|" in lines[end] and lines[end].strip() and not _fence_opening(lines[end]):
                end += 1
            rows = tuple(_table_cells(row) for row in [header, *lines[index + 1 : end]])
            yield _Body("\n".join([header, *lines[index:end]]), atomic=True, rows=rows)
            index = end
            continue

        if _THEMATIC_BREAK.match(line):
            # A rule separates paragraphs; keep it out of the text.
            text_lines.extend(paragraph)
            paragraph.clear()
            text_lines.append("")
            index += 1
            continue

        paragraph.append(line)
        index += 1

    yield from flush_text()


def _fence_opening(line: str) -> tuple[str, int] | None:
    prefix_end = _FENCE_PREFIX.match(line).end()
    match = _FENCE.match(line, prefix_end)
    if match is None:
        return None
    marker = match.group(1)
    # A backtick fence's info string cannot hold backticks (that is inline code).
    if marker[0] == "`" and "`" in line[match.end() :]:
        return None
    return marker[0], len(marker)


def _fence_end(lines: list[str], start: int, fence: tuple[str, int]) -> int:
    """Index of the closing fence line; the last line when the fence is never
    closed (the code then runs to the end of the file, as in CommonMark)."""
    char, length = fence
    for index in range(start, len(lines)):
        line = lines[index]
        if char not in line:
            continue
        rest = line[_FENCE_PREFIX.match(line).end() :].rstrip()
        if len(rest) >= length and not rest.strip(char):
            return index
    return len(lines) - 1


def _is_table_delimiter(line: str) -> bool:
    """A GFM delimiter row such as "|---|:--:|" or "--- | ---"."""
    if "|" not in line or "-" not in line:
        return False
    cells = line.strip().strip("|").split("|")
    return all(_TABLE_DELIMITER_CELL.fullmatch(cell.strip()) for cell in cells)


def _table_cells(line: str) -> tuple[str, ...]:
    """A pipe-table row's cells, unescaped (tables.py escapes them again)."""
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    return tuple(cell.strip().replace("\\|", "|") for cell in _UNESCAPED_PIPE.split(line))


def _heading_text(raw: str) -> str:
    text = raw.strip()[:_MAX_HEADING_SCAN].rstrip()
    # A closing run of #s counts only after a space ("## Title ##", not "C#").
    without_closing = text.rstrip("#")
    if without_closing != text and (not without_closing or without_closing[-1] in " \t"):
        text = without_closing.rstrip()
    attributes = _HEADING_ATTRIBUTES.search(text)
    if attributes is not None:
        text = text[: attributes.start()].rstrip()
    return text[:MAX_TITLE_CHARS]


def _sections(blocks: Iterable[_Heading | _Body], title: str) -> Iterator[Section]:
    heading_stack: list[_Heading] = []

    def structure() -> dict:
        return {
            "title": title,
            "heading_path": [heading.text for heading in heading_stack],
            "heading_level": heading_stack[-1].level if heading_stack else 0,
        }

    current = structure()
    for block in blocks:
        if isinstance(block, _Heading):
            while heading_stack and heading_stack[-1].level >= block.level:
                heading_stack.pop()
            heading_stack.append(block)
            current = structure()
            # The heading line opens its section so that chunks read as they
            # do in the document.
            yield Section(text=block.line, structure=current)
        elif block.rows:
            yield from table_sections(block.rows, structure=current)
        else:
            yield Section(text=block.text, structure=current, atomic=block.atomic)
