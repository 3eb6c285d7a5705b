"""Word documents (.docx), read with python-docx.

The body is walked in document order (paragraphs, tables, content
controls); headers, footers, comments and footnotes live in other parts and
are never read. Tracked changes are read as the document stood before them:
insertions not yet accepted are left out, deletions not yet accepted stay."""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

import docx
from docx.opc.exceptions import PackageNotFoundError
from docx.oxml.ns import qn
from lxml import etree

from .base import ParsedDocument, ParseError, Section
from .packages import open_package
from .tables import table_sections
from .text import MAX_TITLE_CHARS, normalise_text, title_from_filename

NO_TEXT_MESSAGE = "Word document has no text (its body is empty or holds only pictures)"

_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)
# Paragraph styles that hold code, one line per paragraph ("Preformatted
# Text" from LibreOffice, "HTML Preformatted" from Word, "Source Text").
_CODE_STYLE = re.compile(r"preformatted|source text|^code|\bcode$", re.IGNORECASE)
_BODY, _P, _TBL, _SDT, _SDT_CONTENT = qn("w:body"), qn("w:p"), qn("w:tbl"), qn("w:sdt"), qn("w:sdtContent")
_TR, _TC, _T, _DEL_TEXT = qn("w:tr"), qn("w:tc"), qn("w:t"), qn("w:delText")
_TAB, _BR, _CR = qn("w:tab"), qn("w:br"), qn("w:cr")
_PPR, _PSTYLE, _NUMPR, _ILVL, _OUTLINE = qn("w:pPr"), qn("w:pStyle"), qn("w:numPr"), qn("w:ilvl"), qn("w:outlineLvl")
_TCPR, _GRID_SPAN, _VAL = qn("w:tcPr"), qn("w:gridSpan"), qn("w:val")
# Subtrees whose text is not part of the document as it stands: unaccepted
# insertions, the target of an unaccepted move, field instructions, and the
# fallback copy of content that also comes in its preferred form.
_SKIPPED = frozenset(
    {
        qn("w:ins"),
        qn("w:moveTo"),
        qn("w:instrText"),
        "{http://schemas.openxmlformats.org/markup-compatibility/2006}Fallback",
    }
)


def parse(path: Path, filename: str) -> ParsedDocument:
    """Sections carry {"title", "heading_path", "heading_level"} as markdown
    does; heading styles ("Heading 1" to "Heading 9", or an outline level)
    make the path. List items read as "- item"; tables come as table
    sections (see tables.py)."""
    open_package(path, file_type="docx").close()
    try:
        document = docx.Document(str(path))
    except (PackageNotFoundError, KeyError, zipfile.BadZipFile, etree.XMLSyntaxError, ValueError) as error:
        raise ParseError(f"Word document is damaged and cannot be read ({_reason(error)})") from error
    styles = _StyleLevels(document)
    title = _core_title(document) or _first_heading(document, styles) or title_from_filename(filename)
    return ParsedDocument(
        file_type="docx",
        title=title,
        sections=_sections(document, styles, title),
        metadata={},
    )


class _StyleLevels:
    """Heading level (1-9), list-ness and code-ness of paragraph styles, by
    style id, following each style's `based on` chain."""

    def __init__(self, document: docx.document.Document) -> None:
        self.styles = {}
        for style in document.styles:
            style_id = getattr(style, "style_id", None)
            if style_id:
                self.styles[style_id] = style
        self.cache: dict[str, tuple[int, bool, bool]] = {}

    def of(self, style_id: str | None) -> tuple[int, bool, bool]:
        if not style_id:
            return 0, False, False
        if style_id not in self.cache:
            self.cache[style_id] = self._resolve(style_id)
        return self.cache[style_id]

    def _resolve(self, style_id: str) -> tuple[int, bool, bool]:
        style = self.styles.get(style_id)
        seen = set()
        level, is_list, is_code = 0, False, False
        while style is not None and style.style_id not in seen:
            seen.add(style.style_id)
            name = style.name or ""
            match = _HEADING_STYLE.match(name) or _HEADING_STYLE.match(style.style_id)
            if match and not level:
                level = int(match.group(1))
            if name.lower() == "title" and not level:
                level = 1
            p_pr = style.element.find(_PPR)
            if p_pr is not None:
                outline = p_pr.find(_OUTLINE)
                if outline is not None and not level and (outline.get(_VAL) or "").isdigit():
                    level = int(outline.get(_VAL)) + 1 if int(outline.get(_VAL)) < 9 else 0
                if p_pr.find(_NUMPR) is not None:
                    is_list = True
            if name.lower().startswith("list"):
                is_list = True
            if _CODE_STYLE.search(name):
                is_code = True
            style = getattr(style, "base_style", None)
        return level, is_list, is_code


def _core_title(document: docx.document.Document) -> str | None:
    try:
        title = " ".join((document.core_properties.title or "").split())
    except Exception:  # noqa: BLE001 - damaged document properties only cost the title
        return None
    return title[:MAX_TITLE_CHARS] or None


def _first_heading(document: docx.document.Document, styles: _StyleLevels) -> str | None:
    for element in _blocks(document.element.find(_BODY)):
        if element.tag == _P:
            level, _, _ = _paragraph_kind(element, styles)
            if level == 1:
                text = " ".join(paragraph_text(element).split())
                if text:
                    return text[:MAX_TITLE_CHARS]
    return None


def _blocks(container: etree._Element | None) -> Iterator[etree._Element]:
    """Paragraphs and tables in order, content controls unwrapped."""
    if container is None:
        return
    for child in container:
        if child.tag in (_P, _TBL):
            yield child
        elif child.tag == _SDT:
            yield from _blocks(child.find(_SDT_CONTENT))


def _paragraph_kind(paragraph: etree._Element, styles: _StyleLevels) -> tuple[int, int | None, bool]:
    """(heading level or 0, list level or None, whether it is a line of code)."""
    p_pr = paragraph.find(_PPR)
    style_id = None
    list_level = None
    own_level = 0
    if p_pr is not None:
        style = p_pr.find(_PSTYLE)
        style_id = style.get(_VAL) if style is not None else None
        numbering = p_pr.find(_NUMPR)
        if numbering is not None:
            ilvl = numbering.find(_ILVL)
            value = ilvl.get(_VAL) if ilvl is not None else "0"
            list_level = int(value) if value and value.isdigit() else 0
        outline = p_pr.find(_OUTLINE)
        if outline is not None and (outline.get(_VAL) or "").isdigit() and int(outline.get(_VAL)) < 9:
            own_level = int(outline.get(_VAL)) + 1
    style_level, style_is_list, style_is_code = styles.of(style_id)
    if list_level is None and style_is_list:
        list_level = 0
    return own_level or style_level, list_level, style_is_code


def paragraph_text(paragraph: etree._Element) -> str:
    parts: list[str] = []
    _collect_text(paragraph, parts)
    return normalise_text("".join(parts))


def _collect_text(element: etree._Element, parts: list[str]) -> None:
    for child in element:
        tag = child.tag
        if tag in _SKIPPED or not isinstance(tag, str):
            continue
        if tag in (_T, _DEL_TEXT):
            parts.append(child.text or "")
        elif tag == _TAB:
            parts.append("\t")
        elif tag in (_BR, _CR):
            parts.append("\n")
        else:
            _collect_text(child, parts)


def _table_rows(table: etree._Element) -> Iterator[list[str]]:
    for row in table.iter(_TR):
        if row.getparent() is not table:
            continue  # rows of nested tables are read as their cell's text
        cells: list[str] = []
        for cell in row.iter(_TC):
            if cell.getparent() is not row:
                continue
            text = " ".join(" ".join(paragraph_text(p).split()) for p in cell.iter(_P))
            cells.append(text.strip())
            span = cell.find(f"{_TCPR}/{_GRID_SPAN}")
            if span is not None and (span.get(_VAL) or "").isdigit():
                # Merged cells keep the columns under the header aligned.
                cells.extend([""] * (min(int(span.get(_VAL)), 64) - 1))
        yield cells


def _sections(document: docx.document.Document, styles: _StyleLevels, title: str) -> Iterator[Section]:
    heading_stack: list[tuple[int, str]] = []

    def structure() -> dict:
        return {
            "title": title,
            "heading_path": [text for _, text in heading_stack],
            "heading_level": heading_stack[-1][0] if heading_stack else 0,
        }

    current = structure()
    yielded = False
    # Consecutive code paragraphs make one atomic block, kept whole.
    code_lines: list[str] = []
    for element in _blocks(document.element.find(_BODY)):
        if element.tag == _TBL:
            if code_lines:
                yield Section(text="\n".join(code_lines), structure=current, atomic=True)
                code_lines = []
            for section in table_sections(_table_rows(element), structure=current):
                yielded = True
                yield section
            continue
        raw = paragraph_text(element)
        level, list_level, is_code = _paragraph_kind(element, styles)
        if is_code and not level:
            code_lines.append(raw.rstrip())
            continue
        if code_lines:
            if any(line.strip() for line in code_lines):
                yielded = True
                yield Section(text="\n".join(code_lines).strip("\n"), structure=current, atomic=True)
            code_lines = []
        text = raw.strip()
        if not text:
            continue
        if level:
            heading = " ".join(text.split())[:MAX_TITLE_CHARS]
            while heading_stack and heading_stack[-1][0] >= level:
                heading_stack.pop()
            heading_stack.append((level, heading))
            current = structure()
        elif list_level is not None:
            text = "  " * min(list_level, 8) + "- " + text
        yielded = True
        yield Section(text=text, structure=current)
    if any(line.strip() for line in code_lines):
        yielded = True
        yield Section(text="\n".join(code_lines).strip("\n"), structure=current, atomic=True)
    if not yielded:
        raise ParseError(NO_TEXT_MESSAGE)


def _reason(error: Exception) -> str:
    return str(error).strip().rstrip(".") or type(error).__name__
