"""PowerPoint presentations (.pptx), read with python-pptx: one section per
slide, tables as table sections, speaker notes as sections of their own."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import pptx
from lxml import etree
from pptx.enum.shapes import MSO_SHAPE_TYPE
from pptx.exc import PackageNotFoundError

from .base import ParsedDocument, ParseError, Section
from .packages import open_package
from .tables import table_sections
from .text import MAX_TITLE_CHARS, normalise_text, title_from_filename

NO_TEXT_MESSAGE = "presentation has no text (its slides hold no text, e.g. only pictures)"


def parse(path: Path, filename: str) -> ParsedDocument:
    """Sections carry {"title" (the presentation's), "slide" (1-based),
    "slide_title"}; speaker notes add "notes": True. Shapes are read top to
    bottom, then left to right; a slide without a title placeholder takes
    its first line as its title."""
    open_package(path, file_type="pptx").close()
    try:
        presentation = pptx.Presentation(str(path))
    except (PackageNotFoundError, KeyError, zipfile.BadZipFile, etree.XMLSyntaxError, ValueError) as error:
        raise ParseError(f"PowerPoint presentation is damaged and cannot be read ({_reason(error)})") from error
    title = _core_title(presentation) or title_from_filename(filename)
    return ParsedDocument(
        file_type="pptx",
        title=title,
        sections=_sections(presentation, title),
        metadata={"slide_count": len(presentation.slides)},
    )


def _core_title(presentation: pptx.presentation.Presentation) -> str | None:
    try:
        title = " ".join((presentation.core_properties.title or "").split())
    except Exception:  # noqa: BLE001 - damaged document properties only cost the title
        return None
    return title[:MAX_TITLE_CHARS] or None


def _sections(presentation: pptx.presentation.Presentation, title: str) -> Iterator[Section]:
    yielded = False
    for number, slide in enumerate(presentation.slides, start=1):
        texts: list[str] = []
        tables: list[list[list[str]]] = []
        for shape in _reading_order(slide.shapes):
            _collect(shape, texts, tables)
        slide_title = _slide_title(slide) or next((line for text in texts for line in text.split("\n")), "")
        structure = {"title": title, "slide": number, "slide_title": " ".join(slide_title.split())[:MAX_TITLE_CHARS]}
        if texts:
            yielded = True
            yield Section(text="\n".join(texts), structure=structure)
        for rows in tables:
            for section in table_sections(rows, structure=structure):
                yielded = True
                yield section
        notes = _notes(slide)
        if notes:
            yielded = True
            yield Section(text=notes, structure={**structure, "notes": True})
    if not yielded:
        raise ParseError(NO_TEXT_MESSAGE)


def _reading_order(shapes) -> list:
    def key(shape) -> tuple[int, int]:
        return (shape.top if shape.top is not None else 0, shape.left if shape.left is not None else 0)

    return sorted(shapes, key=key)


def _collect(shape, texts: list[str], tables: list[list[list[str]]]) -> None:
    if shape.shape_type == MSO_SHAPE_TYPE.GROUP:
        for child in _reading_order(shape.shapes):
            _collect(child, texts, tables)
        return
    if getattr(shape, "has_table", False) and shape.has_table:
        tables.append([[_cell_text(cell.text) for cell in row.cells] for row in shape.table.rows])
        return
    if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
        text = normalise_text(shape.text_frame.text).strip()
        if text:
            texts.append(text)


def _cell_text(text: str) -> str:
    return " ".join(text.split())


def _slide_title(slide) -> str | None:
    shape = slide.shapes.title
    if shape is None or not shape.has_text_frame:
        return None
    return shape.text_frame.text.strip() or None


def _notes(slide) -> str:
    if not slide.has_notes_slide:
        return ""
    frame = slide.notes_slide.notes_text_frame
    return normalise_text(frame.text).strip() if frame is not None else ""


def _reason(error: Exception) -> str:
    return str(error).strip().rstrip(".") or type(error).__name__
