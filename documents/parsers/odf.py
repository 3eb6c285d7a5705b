"""OpenDocument text, presentations and spreadsheets (.odt, .odp, .ods).

content.xml is read with lxml from the guarded package (packages.py): the
format is one documented XML tree, and odfpy (last released in 2020) would
build a second, slower copy of it without adding structure. Sections take
the same shapes as the Word, PowerPoint and Excel parsers'."""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from lxml import etree

from .base import ParsedDocument, ParseError, Section
from .packages import ODF_MIMETYPES, open_package
from .tables import table_sections
from .text import MAX_TITLE_CHARS, normalise_text, title_from_filename

_NS = {
    "office": "urn:oasis:names:tc:opendocument:xmlns:office:1.0",
    "text": "urn:oasis:names:tc:opendocument:xmlns:text:1.0",
    "table": "urn:oasis:names:tc:opendocument:xmlns:table:1.0",
    "draw": "urn:oasis:names:tc:opendocument:xmlns:drawing:1.0",
    "presentation": "urn:oasis:names:tc:opendocument:xmlns:presentation:1.0",
    "style": "urn:oasis:names:tc:opendocument:xmlns:style:1.0",
    "dc": "http://purl.org/dc/elements/1.1/",
}


def _q(name: str) -> str:
    prefix, local = name.split(":")
    return f"{{{_NS[prefix]}}}{local}"


_P, _H, _SPAN, _A, _S, _TAB, _LINE_BREAK = (
    _q("text:p"),
    _q("text:h"),
    _q("text:span"),
    _q("text:a"),
    _q("text:s"),
    _q("text:tab"),
    _q("text:line-break"),
)
_LIST, _LIST_ITEM, _LIST_HEADER, _SECTION = (
    _q("text:list"),
    _q("text:list-item"),
    _q("text:list-header"),
    _q("text:section"),
)
_TABLE, _ROW, _CELL, _COVERED = (
    _q("table:table"),
    _q("table:table-row"),
    _q("table:table-cell"),
    _q("table:covered-table-cell"),
)
_PAGE, _FRAME, _NOTES = _q("draw:page"), _q("draw:frame"), _q("presentation:notes")
_OUTLINE_LEVEL, _STYLE_NAME = _q("text:outline-level"), _q("text:style-name")
_ROWS_REPEATED, _COLUMNS_REPEATED = _q("table:number-rows-repeated"), _q("table:number-columns-repeated")
# Inline content that is not the paragraph's own text: footnotes, comments,
# a tracked change's deleted text, frames anchored in the paragraph.
_SKIPPED_INLINE = frozenset(
    {_q("text:note"), _q("office:annotation"), _q("text:tracked-changes"), _q("draw:frame"), _q("text:bookmark-ref")}
)
# Subtrees of the body that repeat or annotate it.
_SKIPPED_BLOCKS = frozenset(
    {
        _q("text:table-of-content"),
        _q("text:alphabetical-index"),
        _q("text:illustration-index"),
        _q("text:tracked-changes"),
        _q("text:sequence-decls"),
        _q("office:forms"),
    }
)
# A repeated row or cell with content is expanded at most this often: a
# sheet that repeats one row a million times is not a million rows of data.
MAX_REPEAT = 1000
_CODE_STYLE = re.compile(r"preformatted|source.text|code", re.IGNORECASE)
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
_KIND_NAMES = {"odt": "OpenDocument text", "odp": "OpenDocument presentation", "ods": "OpenDocument spreadsheet"}


def parse(path: Path, filename: str) -> ParsedDocument:
    """.odt: {"title", "heading_path", "heading_level"} as for Word;
    .odp: {"title", "slide", "slide_title"} and "notes": True on speaker
    notes; .ods: {"title", "sheet"} with one table per sheet."""
    file_type = _kind_of(path)
    with open_package(path, file_type=file_type) as archive:
        content = _read_xml(archive, "content.xml", file_type)
        meta = _read_xml(archive, "meta.xml", file_type, required=False)
    body = content.find(_q("office:body"))
    if body is None or len(body) == 0:
        raise ParseError(f"{_KIND_NAMES[file_type]} is damaged: content.xml has no body")
    styles = _code_styles(content)
    title = _meta_title(meta)
    if file_type == "odt":
        title = title or _first_heading(body[0]) or title_from_filename(filename)
        sections = _text_sections(body[0], title, styles)
    elif file_type == "odp":
        title = title or title_from_filename(filename)
        sections = _slide_sections(body[0], title)
    else:
        title = title or title_from_filename(filename)
        sections = _sheet_sections(body[0], title)
    return ParsedDocument(file_type=file_type, title=title, sections=_require_text(sections, file_type), metadata={})


def _kind_of(path: Path) -> str:
    """The package's own kind, from its `mimetype` entry (open_package
    verifies it against the manifest)."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open("mimetype") as member:
            mimetype = member.read(256).decode("ascii", "replace").strip()
    except (KeyError, zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as error:
        raise ParseError("OpenDocument file is damaged: its mimetype entry cannot be read") from error
    if mimetype not in ODF_MIMETYPES:
        raise ParseError(f"OpenDocument file of an unsupported kind ({mimetype[:80]})")
    return ODF_MIMETYPES[mimetype]


def _read_xml(archive: zipfile.ZipFile, name: str, file_type: str, *, required: bool = True) -> etree._Element | None:
    try:
        with archive.open(name) as member:
            data = member.read()
    except KeyError as error:
        if not required:
            return None
        raise ParseError(f"{_KIND_NAMES[file_type]} is incomplete: it has no {name}") from error
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, RuntimeError) as error:
        raise ParseError(f"{_KIND_NAMES[file_type]} is damaged: {name} cannot be unpacked ({error})") from error
    try:
        root = etree.fromstring(data, parser=_XML_PARSER)
    except etree.XMLSyntaxError as error:
        if not required:
            return None
        raise ParseError(f"{_KIND_NAMES[file_type]} is damaged: {name} is not valid XML ({error})") from error
    return root


def _meta_title(meta: etree._Element | None) -> str | None:
    if meta is None:
        return None
    element = meta.find(f".//{_q('dc:title')}")
    title = " ".join("".join(element.itertext()).split()) if element is not None else ""
    return title[:MAX_TITLE_CHARS] or None


def _code_styles(content: etree._Element) -> frozenset[str]:
    """Paragraph style names that hold code: named like it, or automatic
    styles derived from such a style."""
    names = set()
    for style in content.iter(_q("style:style")):
        name = style.get(_q("style:name")) or ""
        parent = style.get(_q("style:parent-style-name")) or ""
        if _CODE_STYLE.search(name) or _CODE_STYLE.search(parent):
            names.add(name)
    return frozenset(names)


def inline_text(element: etree._Element) -> str:
    parts: list[str] = []
    _collect(element, parts)
    return normalise_text("".join(parts))


def _collect(element: etree._Element, parts: list[str]) -> None:
    if element.text:
        parts.append(element.text)
    for child in element:
        tag = child.tag
        if tag == _S:
            count = child.get(_q("text:c")) or "1"
            parts.append(" " * (min(int(count), 1000) if count.isdigit() else 1))
        elif tag == _TAB:
            parts.append("\t")
        elif tag == _LINE_BREAK:
            parts.append("\n")
        elif tag not in _SKIPPED_INLINE and isinstance(tag, str):
            _collect(child, parts)
        if child.tail:
            parts.append(child.tail)


def _first_heading(container: etree._Element) -> str | None:
    for heading in container.iter(_H):
        if (heading.get(_OUTLINE_LEVEL) or "1") == "1":
            text = " ".join(inline_text(heading).split())
            if text:
                return text[:MAX_TITLE_CHARS]
    return None


def _text_sections(container: etree._Element, title: str, code_styles: frozenset[str]) -> Iterator[Section]:
    heading_stack: list[tuple[int, str]] = []

    def structure() -> dict:
        return {
            "title": title,
            "heading_path": [text for _, text in heading_stack],
            "heading_level": heading_stack[-1][0] if heading_stack else 0,
        }

    state = {"structure": structure()}
    code_lines: list[str] = []

    def flush_code() -> Iterator[Section]:
        if any(line.strip() for line in code_lines):
            yield Section(text="\n".join(code_lines).strip("\n"), structure=state["structure"], atomic=True)
        code_lines.clear()

    def walk(element: etree._Element, list_depth: int) -> Iterator[Section]:
        for child in element:
            tag = child.tag
            if tag in _SKIPPED_BLOCKS or not isinstance(tag, str):
                continue
            if tag == _P and child.get(_STYLE_NAME) in code_styles and not list_depth:
                code_lines.append(inline_text(child).rstrip())
                continue
            yield from flush_code()
            if tag == _H:
                text = " ".join(inline_text(child).split())[:MAX_TITLE_CHARS]
                if not text:
                    continue
                level_value = child.get(_OUTLINE_LEVEL) or "1"
                level = min(int(level_value), 10) if level_value.isdigit() else 1
                while heading_stack and heading_stack[-1][0] >= level:
                    heading_stack.pop()
                heading_stack.append((level, text))
                state["structure"] = structure()
                yield Section(text=text, structure=state["structure"])
            elif tag == _P:
                text = inline_text(child).strip()
                if text:
                    if list_depth:
                        text = "  " * min(list_depth - 1, 8) + "- " + text
                    yield Section(text=text, structure=state["structure"])
            elif tag == _LIST:
                yield from walk(child, list_depth + 1)
            elif tag == _TABLE:
                yield from table_sections(_table_rows(child), structure=state["structure"])
            else:
                # Sections, list items, and other containers of paragraphs.
                yield from walk(child, list_depth)
        yield from flush_code()

    yield from walk(container, 0)


def _table_rows(table: etree._Element) -> Iterator[list[str]]:
    """Rows of `table` (header rows and row groups included, nested tables
    read as their cell's text), repeated rows and cells expanded up to
    MAX_REPEAT while they hold text; trailing empty cells dropped."""
    for row in table.iter(_ROW):
        if _owning_table(row) is not table:
            continue
        cells: list[str] = []
        for cell in row:
            if cell.tag not in (_CELL, _COVERED):
                continue
            text = _cell_text(cell)
            repeat = _repeat(cell.get(_COLUMNS_REPEATED))
            if text:
                cells.extend([text] * min(repeat, MAX_REPEAT))
            elif repeat < 16_384:
                cells.extend([""] * repeat)
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            continue
        for _ in range(min(_repeat(row.get(_ROWS_REPEATED)), MAX_REPEAT)):
            yield cells


def _owning_table(row: etree._Element) -> etree._Element | None:
    parent = row.getparent()
    while parent is not None and parent.tag != _TABLE:
        parent = parent.getparent()
    return parent


def _cell_text(cell: etree._Element) -> str:
    parts = [inline_text(paragraph) for paragraph in cell if paragraph.tag in (_P, _H, _LIST)]
    text = " ".join(" ".join(part.split()) for part in parts if part.strip())
    if text:
        return text
    for attribute in ("office:value", "office:date-value", "office:time-value", "office:boolean-value"):
        value = cell.get(_q(attribute))
        if value:
            return value
    return ""


def _repeat(value: str | None) -> int:
    return int(value) if value and value.isdigit() and int(value) > 0 else 1


def _slide_sections(container: etree._Element, title: str) -> Iterator[Section]:
    for number, page in enumerate(container.iter(_PAGE), start=1):
        texts: list[str] = []
        tables: list[etree._Element] = []
        slide_title = ""
        for frame in page.iter(_FRAME):
            if any(ancestor.tag in (_NOTES, _FRAME) for ancestor in frame.iterancestors()):
                continue
            table = frame.find(_TABLE)
            if table is not None:
                tables.append(table)
                continue
            text = "\n".join(
                inline_text(paragraph).strip() for paragraph in frame.iter(_P, _H) if inline_text(paragraph).strip()
            )
            if not text:
                continue
            if frame.get(_q("presentation:class")) == "title" and not slide_title:
                slide_title = text
            texts.append(text)
        slide_title = slide_title or next((line for text in texts for line in text.split("\n")), "")
        structure = {"title": title, "slide": number, "slide_title": " ".join(slide_title.split())[:MAX_TITLE_CHARS]}
        if texts:
            yield Section(text="\n".join(texts), structure=structure)
        for table in tables:
            yield from table_sections(_table_rows(table), structure=structure)
        notes = page.find(_NOTES)
        if notes is not None:
            text = "\n".join(
                inline_text(paragraph).strip() for paragraph in notes.iter(_P, _H) if inline_text(paragraph).strip()
            )
            if text:
                yield Section(text=text, structure={**structure, "notes": True})


def _sheet_sections(container: etree._Element, title: str) -> Iterator[Section]:
    for table in container.iterchildren(_TABLE):
        rows = list(_table_rows(table))
        width = max((len(row) for row in rows), default=0)
        used = [index for index in range(width) if any(index < len(row) and row[index] for row in rows)]
        if not used:
            continue
        structure = {"title": title, "sheet": table.get(_q("table:name")) or ""}
        yield from table_sections(
            ([row[index] if index < len(row) else "" for index in used] for row in rows), structure=structure
        )


def _require_text(sections: Iterator[Section], file_type: str) -> Iterator[Section]:
    yielded = False
    for section in sections:
        yielded = True
        yield section
    if not yielded:
        raise ParseError(f"{_KIND_NAMES[file_type]} has no text")
