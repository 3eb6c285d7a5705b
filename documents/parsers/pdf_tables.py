"""Ruled tables on PDF pages, found by pdfplumber and rendered like every
other table (tables.py): Markdown rows under a header that every chunk of
the table repeats.

pdfplumber lays a page out in Python, which costs tenths of a second a
page, so it looks only at pages ruled like a table: pdfium lists a page's
path objects first (in C), and a page qualifies when at least three
horizontal rules share both ends (the rows of a column) and three vertical
rules share both ends (the columns of a row). Running text draws next to
no rules; a drawing with thousands of paths is a figure. A page with no
table found keeps pypdf's text.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pdfplumber
import pypdfium2
import pypdfium2.raw as pdfium_raw

from .base import Section
from .ocr import PDFIUM_LOCK
from .tables import table_sections

logger = logging.getLogger(__name__)
# pdfminer (under pdfplumber) warns about every font it cannot fully decode;
# the text layer comes from pypdf, so those are noise in a worker's log.
logging.getLogger("pdfminer").setLevel(logging.ERROR)

# A page drawing more paths than this is a figure (a plot, a map).
MAX_PATHS = 1500
# Rules shared by a table's rows and by its columns.
MIN_ALIGNED_RULES = 3
# A rule is thinner than this (points) and longer than its minimum length.
RULE_WIDTH = 3.0
MIN_RULE_LENGTH = 8.0
# A grid counts as a table when it has a header and a body row, text in at
# least half of its cells, and a header of at least two cells that hold a
# word (a figure's grid holds axis labels and symbols).
MIN_FILLED_SHARE = 0.5
_WORD = re.compile(r"[^\W\d_]{3,}")


class TableFinder:
    """The tables of one PDF's pages, page by page."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pdfium: pypdfium2.PdfDocument | None = None
        self._plumber = None

    def page_sections(self, index: int, *, structure: dict, clean) -> list[Section] | None:
        """The page as sections in reading order (text above a table, the
        table, text below), or None when it holds no table. `clean`
        normalises extracted text as the caller does for whole pages."""
        try:
            if not self._looks_ruled(index):
                return None
            return self._read(index, structure=structure, clean=clean)
        except Exception as error:  # noqa: BLE001 - a table reader's failure costs the tables, not the page
            logger.warning("PDF page %d: looking for tables failed: %s", index + 1, error)
            return None

    def close(self) -> None:
        if self._plumber is not None:
            self._plumber.close()
            self._plumber = None
        if self._pdfium is not None:
            with PDFIUM_LOCK:
                self._pdfium.close()
            self._pdfium = None

    def _looks_ruled(self, index: int) -> bool:
        horizontal: Counter = Counter()
        vertical: Counter = Counter()
        with PDFIUM_LOCK:
            if self._pdfium is None:
                self._pdfium = pypdfium2.PdfDocument(str(self.path))
            page = self._pdfium[index]
            try:
                for count, path in enumerate(
                    page.get_objects(filter=[pdfium_raw.FPDF_PAGEOBJ_PATH], max_depth=2), start=1
                ):
                    if count > MAX_PATHS:
                        return False
                    left, bottom, right, top = path.get_bounds()
                    if top - bottom < RULE_WIDTH and right - left > MIN_RULE_LENGTH:
                        horizontal[round(left), round(right)] += 1
                    elif right - left < RULE_WIDTH and top - bottom > MIN_RULE_LENGTH:
                        vertical[round(bottom), round(top)] += 1
            finally:
                page.close()
        return (
            max(horizontal.values(), default=0) >= MIN_ALIGNED_RULES
            and max(vertical.values(), default=0) >= MIN_ALIGNED_RULES
        )

    def _read(self, index: int, *, structure: dict, clean) -> list[Section] | None:
        if self._plumber is None:
            self._plumber = pdfplumber.open(self.path, password="")
        page = self._plumber.pages[index]
        try:
            tables = [(table.bbox, rows) for table in page.find_tables() if _is_table(rows := table.extract())]
            if not tables:
                return None
            return list(_in_reading_order(page, sorted(tables, key=lambda found: found[0][1]), structure, clean))
        finally:
            page.close()


def _is_table(rows: list[list[str | None]]) -> bool:
    rows = [row for row in rows if any((cell or "").strip() for cell in row)]
    if len(rows) < 2 or max(len(row) for row in rows) < 2:
        return False
    cells = [cell for row in rows for cell in row]
    if sum(1 for cell in cells if (cell or "").strip()) < MIN_FILLED_SHARE * len(cells):
        return False
    return sum(1 for cell in rows[0] if _WORD.search(cell or "")) >= 2


def _in_reading_order(page, tables: list[tuple[tuple, list]], structure: dict, clean) -> Iterator[Section]:
    """The page's text outside its tables, strip by strip down the page,
    with each table where it stands."""
    boxes = [bbox for bbox, _ in tables]

    def outside_tables(obj) -> bool:
        return not any(
            x0 <= obj.get("x0", -1)
            and obj.get("x1", -1) <= x1
            and top <= obj.get("top", -1)
            and obj.get("bottom", -1) <= bottom
            for x0, top, x1, bottom in boxes
        )

    text_only = page.filter(outside_tables)
    left, page_top, right, page_bottom = page.bbox

    def text_between(top: float, bottom: float) -> Iterator[Section]:
        top, bottom = max(top, page_top), min(bottom, page_bottom)
        if bottom > top:
            text = clean(text_only.crop((left, top, right, bottom)).extract_text(use_text_flow=True) or "")
            if text:
                yield Section(text=text, structure=dict(structure))

    above = page_top
    for (_, top, _, bottom), rows in tables:
        yield from text_between(above, top)
        yield from table_sections(rows, structure=dict(structure))
        above = max(above, bottom)
    yield from text_between(above, page_bottom)
