"""One rendering for every table, whatever the format it came from: Markdown
pipe-table rows. The header row and its delimiter line travel apart from the
body rows (`Section.table_header`), so the chunker can repeat them at the
top of every chunk that continues a table."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence

from .base import Section

# Sheets are read in blocks of rows, each a section of its own: a sheet of
# 100,000 rows is never one string.
ROWS_PER_SECTION = 200

_CELL_WHITESPACE = re.compile(r"\s+")


def markdown_cell(value: object) -> str:
    """A cell's text on one line, with pipes escaped so they cannot end it."""
    if value is None:
        return ""
    text = _CELL_WHITESPACE.sub(" ", str(value)).strip()
    return text.replace("|", "\\|")


def markdown_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(markdown_cell(cell) for cell in cells) + " |"


def markdown_header(cells: Sequence[object]) -> str:
    """The header row followed by its delimiter line."""
    return markdown_row(cells) + "\n" + "|" + "|".join(" --- " for _ in cells) + "|"


def table_sections(rows: Iterable[Sequence[object]], *, structure: dict) -> Iterator[Section]:
    """Sections for one table: the first non-empty row is the header, the
    rest become body rows in blocks of `ROWS_PER_SECTION`. Rows are padded
    to the widest row seen so far; empty rows are skipped."""
    header: str | None = None
    width = 0
    block: list[str] = []
    for row in rows:
        cells = [markdown_cell(cell) for cell in row]
        if not any(cells):
            continue
        if header is None:
            width = len(cells)
            header = markdown_header(cells)
            continue
        width = max(width, len(cells))
        block.append(markdown_row(cells + [""] * (width - len(cells))))
        if len(block) >= ROWS_PER_SECTION:
            yield Section(text="\n".join(block), structure=structure, atomic=True, table_header=header)
            block = []
    if header is None:
        return
    yield Section(text="\n".join(block), structure=structure, atomic=True, table_header=header)
