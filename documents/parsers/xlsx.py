"""Excel workbooks (.xlsx), streamed with openpyxl in read-only mode: one
table per sheet, the sheet's first non-empty row as its header, formulas
read as the values Excel cached for them."""

from __future__ import annotations

import datetime
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import openpyxl
from lxml import etree
from openpyxl.utils.exceptions import InvalidFileException

from .base import ParsedDocument, ParseError, Section
from .packages import open_package
from .tables import table_sections
from .text import MAX_TITLE_CHARS, title_from_filename

NO_TEXT_MESSAGE = "workbook has no data (every sheet is empty)"
# Rows past this index in one sheet are left out: a sheet that claims more
# is a generated file, not a table to search.
MAX_ROWS_PER_SHEET = 1_048_576


def parse(path: Path, filename: str) -> ParsedDocument:
    """One table per sheet, sections with {"title", "sheet"} (see
    tables.py for how rows are rendered). Empty rows and columns are
    skipped; each sheet is read twice, row by row, once to find its empty
    columns and once to render it, so memory stays flat however long it is."""
    open_package(path, file_type="xlsx").close()
    workbook = _open(path)
    title = _core_title(workbook) or title_from_filename(filename)
    return ParsedDocument(
        file_type="xlsx",
        title=title,
        sections=_sections(workbook, title),
        metadata={"sheets": list(workbook.sheetnames)[:100]},
    )


def _open(path: Path) -> openpyxl.Workbook:
    try:
        return openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    except (InvalidFileException, KeyError, zipfile.BadZipFile, etree.XMLSyntaxError, ValueError, TypeError) as error:
        raise ParseError(f"Excel workbook is damaged and cannot be read ({_reason(error)})") from error


def _core_title(workbook: openpyxl.Workbook) -> str | None:
    try:
        title = " ".join((workbook.properties.title or "").split())
    except Exception:  # noqa: BLE001 - damaged document properties only cost the title
        return None
    return title[:MAX_TITLE_CHARS] or None


def _sections(workbook: openpyxl.Workbook, title: str) -> Iterator[Section]:
    yielded = False
    try:
        for sheet in workbook.worksheets:
            # Declared dimensions are often wrong (or "A1:XFD1048576");
            # without them rows are as long as their last cell.
            sheet.reset_dimensions()
            columns = _used_columns(sheet)
            if not columns:
                continue
            structure = {"title": title, "sheet": sheet.title}
            rows = ([_cell(row, index) for index in columns] for row in _rows(sheet))
            for section in table_sections(rows, structure=structure):
                yielded = True
                yield section
    finally:
        workbook.close()
    if not yielded:
        raise ParseError(NO_TEXT_MESSAGE)


def _rows(sheet) -> Iterator[Sequence[object]]:
    try:
        yield from sheet.iter_rows(max_row=MAX_ROWS_PER_SHEET, values_only=True)
    except (KeyError, zipfile.BadZipFile, etree.XMLSyntaxError, ValueError, TypeError, EOFError) as error:
        raise ParseError(f"Excel sheet {sheet.title!r} is damaged and cannot be read ({_reason(error)})") from error


def _used_columns(sheet) -> list[int]:
    used: set[int] = set()
    for row in _rows(sheet):
        for index, value in enumerate(row):
            if index not in used and _format(value):
                used.add(index)
    return sorted(used)


def _cell(row: Sequence[object], index: int) -> str:
    return _format(row[index]) if index < len(row) else ""


def _format(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else format(value, ".15g")
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ", timespec="seconds").removesuffix(" 00:00:00")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return str(value).strip()


def _reason(error: Exception) -> str:
    return str(error).strip().rstrip(".") or type(error).__name__
