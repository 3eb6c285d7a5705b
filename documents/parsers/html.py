"""HTML (and the XHTML inside EPUBs): visible text as headings, paragraphs,
atomic <pre> blocks and tables, without scripts, styles or navigation.

lxml builds the tree, which repairs sloppy markup (unclosed <p>, <li>).
libxml2 gives up on documents nested deeper than 256 elements and returns
an empty or cut-off tree; those are read instead from the stream of tags by
the standard library's event parser, which keeps no tree at all."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from lxml import etree
from lxml import html as lxml_html

from .base import ParsedDocument, Section
from .budgets import BudgetExceeded
from .tables import table_sections
from .text import MAX_TITLE_CHARS, decode_text, normalise_text, title_from_filename

# Subtrees with no reading content. <nav> and table-of-contents blocks repeat
# the headings and would turn into duplicate chunks.
_DROPPED_TAGS = frozenset(
    {
        "head",
        "script",
        "style",
        "noscript",
        "template",
        "nav",
        "svg",
        "math",
        "iframe",
        "object",
        "embed",
        "canvas",
        "button",
        "select",
        "input",
        "textarea",
        "audio",
        "video",
        "map",
        "dialog",
    }
)
# Elements without end tags; the event reader must never wait for one.
_VOID_TAGS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
)
# Containers whose end tag is never omitted, so the event reader can skip a
# hidden one by counting its start and end tags.
_ALWAYS_CLOSED_TAGS = frozenset(
    {"div", "section", "nav", "aside", "ul", "ol", "dl", "table", "span", "details", "header", "footer", "form"}
)
_TOC_NAME = re.compile(r"^(?:toc|tocdiv|table-of-contents)$|[-_]toc$")
# Containers that hold the whole page; a "toc-inline" class on <body> is a
# layout hint, not a table of contents.
_NEVER_DROPPED = frozenset({"html", "body", "main", "article"})
_HEADING_TAGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BLOCK_TAGS = frozenset(
    {
        "address",
        "article",
        "aside",
        "blockquote",
        "body",
        "caption",
        "center",
        "dd",
        "details",
        "dialog",
        "div",
        "dl",
        "dt",
        "fieldset",
        "figcaption",
        "figure",
        "footer",
        "form",
        "header",
        "hgroup",
        "hr",
        "html",
        "legend",
        "li",
        "main",
        "ol",
        "p",
        "section",
        "summary",
        "ul",
    }
)
_CELL_TAGS = frozenset({"td", "th"})
_WHITESPACE = re.compile(r"\s+")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Stands for a <br> until whitespace is collapsed (source newlines are just
# spaces in HTML).
_LINE_BREAK = "\ue000"
_XHTML_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, remove_comments=True, remove_pis=True
)


@dataclass
class Block:
    """One unit of reading content. `kind` is "heading", "text", "pre" or
    "table"; `ids` are the element ids seen since the previous block (anchors
    that navigation can point at)."""

    kind: str
    text: str
    level: int = 0
    ids: list[str] = field(default_factory=list)
    # Tables: their rows of cell texts (`text` is then their rendering).
    rows: list[list[str]] = field(default_factory=list)

    def sections(self, structure: dict) -> Iterator[Section]:
        """This block as sections under `structure`: a table as table
        sections (see tables.py), code atomic, anything else as text."""
        if self.kind == "table":
            yield from table_sections(self.rows, structure=structure)
        else:
            yield Section(text=self.text, structure=structure, atomic=self.kind == "pre")


def parse(path: Path, filename: str) -> ParsedDocument:
    decoded = decode_text(path.read_bytes())
    return parse_text(decoded.text, filename=filename)


def parse_text(text: str, *, filename: str) -> ParsedDocument:
    """Sections carry {"title", "heading_path", "heading_level"} like
    markdown; <pre> blocks and tables are atomic. The title is the page's
    <title>, else its first <h1>, else the file name."""
    page_title, blocks = read_markup(text)
    title = page_title or _first_h1(blocks) or title_from_filename(filename)
    return ParsedDocument(file_type="html", title=title, sections=_sections(blocks, title), metadata={})


def read_markup(markup: str | bytes, *, xhtml: bool = False) -> tuple[str | None, list[Block]]:
    """The page <title> and the reading blocks of an HTML or XHTML
    document."""
    root = parse_tree(markup, xhtml=xhtml)
    if root is None:
        return _read_events(markup)
    return document_title(root), list(html_blocks(root))


# Hostile markup: nesting deeper than this many container elements (which
# HTML never closes implicitly) is refused. Real pages nest a few dozen deep.
MAX_NESTING_DEPTH = 10_000
_NESTING_TAGS = frozenset(
    {
        "div",
        "span",
        "section",
        "article",
        "aside",
        "nav",
        "main",
        "header",
        "footer",
        "blockquote",
        "ul",
        "ol",
        "dl",
        "table",
        "a",
        "b",
        "i",
        "em",
        "strong",
        "font",
        "figure",
        "small",
        "big",
        "sub",
        "sup",
        "u",
        "s",
    }
)


def refuse_entity_expansion(root: etree._Element, *, name: str = "the document") -> None:
    """Refuse XML whose internal DTD declares entities that expand into other
    entities (the "billion laughs" bomb). Entities are never expanded by the
    parsers (resolve_entities=False); a file built to expand is refused
    rather than read without its text."""
    dtd = root.getroottree().docinfo.internalDTD
    if dtd is None:
        return
    for entity in dtd.iterentities():
        if "&" in (entity.content or ""):
            raise BudgetExceeded(
                f"{name} declares XML entities that expand into other entities (entity &{entity.name}; "
                "XML entity expansion is refused)",
                budget="xml_entities",
            )


def parse_tree(markup: str | bytes, *, xhtml: bool = False) -> etree._Element | None:
    """The document tree, or None when it is nested too deeply for libxml2.

    XHTML is tried as XML first: parsing it as HTML would let a self-closed
    <title/> or <script/> swallow the rest of the page. Markup that is not
    well-formed XML falls back to the forgiving HTML parser."""
    if xhtml:
        try:
            root = etree.fromstring(_as_bytes(markup), parser=_XHTML_PARSER)
        except etree.XMLSyntaxError as error:
            if "depth" in str(error).lower():
                return None
        else:
            if root is not None:
                refuse_entity_expansion(root)
                return root
    text = markup if isinstance(markup, str) else decode_text(markup).text
    # lxml refuses control characters in text it is asked to store later.
    text = _CONTROL_CHARACTERS.sub("", _strip_xml_declaration(text))
    parser = lxml_html.HTMLParser()
    try:
        root = lxml_html.document_fromstring(text, parser=parser)
    except (etree.ParserError, ValueError):
        # lxml's "Document is empty": markup with no elements or text.
        return etree.Element("html")
    if any(entry.type_name == "ERR_RESOURCE_LIMIT" for entry in parser.error_log):
        return None
    return root


def _as_bytes(markup: str | bytes) -> bytes:
    return markup.encode("utf-8") if isinstance(markup, str) else markup


def _strip_xml_declaration(markup: str) -> str:
    # lxml refuses str input that declares an encoding.
    if markup.lstrip().startswith("<?xml"):
        end = markup.find("?>")
        return markup[end + 2 :] if end != -1 else markup
    return markup


def local_name(element: etree._Element) -> str:
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    return tag.rsplit("}", 1)[-1].lower()


def document_title(root: etree._Element) -> str | None:
    for element in root.iter():
        if local_name(element) == "title":
            title = _WHITESPACE.sub(" ", "".join(element.itertext())).strip()
            return title[:MAX_TITLE_CHARS] or None
    return None


def html_blocks(root: etree._Element) -> Iterator[Block]:
    """Reading content of a parsed (X)HTML tree in document order. Iterative,
    so deeply nested markup cannot exhaust the stack. Removes boilerplate
    from the tree as a side effect."""
    _drop_boilerplate(root)
    walker = _BlockWalker()
    body = next((element for element in root.iter() if local_name(element) == "body"), root)
    for event, element in etree.iterwalk(body, events=("start", "end")):
        if event == "start":
            yield from walker.start_tag(local_name(element), element.attrib)
            walker.text(element.text)
        else:
            yield from walker.end_tag(local_name(element))
            walker.text(element.tail)
    yield from walker.flush()


def _drop_boilerplate(root: etree._Element) -> None:
    doomed = []
    for element in root.iter():
        if not isinstance(element.tag, str):
            doomed.append(element)
            continue
        name = local_name(element)
        if name in _DROPPED_TAGS or (name not in _NEVER_DROPPED and _is_hidden_or_toc(element.attrib)):
            doomed.append(element)
    for element in doomed:
        if element is not root and element.getparent() is not None:
            _remove_keeping_tail(element)


def _is_hidden_or_toc(attributes: Mapping[str, str | None]) -> bool:
    if "hidden" in attributes or attributes.get("aria-hidden") == "true":
        return True
    if attributes.get("role") in ("navigation", "doc-toc"):
        return True
    names = [attributes.get("id") or "", *(attributes.get("class") or "").split()]
    return any(_TOC_NAME.search(name.lower()) for name in names if name)


def _remove_keeping_tail(element: etree._Element) -> None:
    parent = element.getparent()
    tail = element.tail
    if tail:
        previous = element.getprevious()
        # A space keeps words on either side of a removed block apart.
        if previous is not None:
            previous.tail = (previous.tail or "") + " " + tail
        else:
            parent.text = (parent.text or "") + " " + tail
    parent.remove(element)


def _read_events(markup: str | bytes) -> tuple[str | None, list[Block]]:
    reader = _EventReader()
    text = markup if isinstance(markup, str) else decode_text(markup).text
    reader.feed(text)
    reader.close()
    reader.blocks.extend(reader.walker.flush())
    title = _WHITESPACE.sub(" ", "".join(reader.title_parts)).strip()[:MAX_TITLE_CHARS]
    return title or None, reader.blocks


class _EventReader(HTMLParser):
    """Feeds the block walker from the tag stream, skipping boilerplate by
    counting start and end tags of the skipped element's name."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.walker = _BlockWalker()
        self.blocks: list[Block] = []
        self.title_parts: list[str] = []
        self.in_title = False
        self.skipping: str | None = None
        self.skip_depth = 0
        self.depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        name = tag.rsplit(":", 1)[-1].lower()
        if self.skipping is not None:
            if name == self.skipping:
                self.skip_depth += 1
            return
        if name in _VOID_TAGS and name not in ("br", "img", "hr"):
            return
        attributes = dict(attrs)
        skipped = name in _DROPPED_TAGS and name != "head" and name not in _VOID_TAGS
        if skipped or (name in _ALWAYS_CLOSED_TAGS and _is_hidden_or_toc(attributes)):
            self.skipping, self.skip_depth = name, 1
            return
        if name == "title":
            self.in_title = True
            return
        if name in _NESTING_TAGS:
            self.depth += 1
            if self.depth > MAX_NESTING_DEPTH:
                raise BudgetExceeded(
                    f"the markup nests more than {MAX_NESTING_DEPTH} elements deep (nesting limit)", budget="nesting"
                )
        self.blocks.extend(self.walker.start_tag(name, attributes))
        if name in _VOID_TAGS:
            self.blocks.extend(self.walker.end_tag(name))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        name = tag.rsplit(":", 1)[-1].lower()
        self.handle_starttag(tag, attrs)
        if self.skipping == name and self.skip_depth == 1:
            self.skipping, self.skip_depth = None, 0
        elif self.skipping is None and name not in _VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        name = tag.rsplit(":", 1)[-1].lower()
        if self.skipping is not None:
            if name == self.skipping:
                self.skip_depth -= 1
                if not self.skip_depth:
                    self.skipping = None
            return
        if name == "title":
            self.in_title = False
            return
        if name in _NESTING_TAGS and self.depth:
            self.depth -= 1
        self.blocks.extend(self.walker.end_tag(name))

    def handle_data(self, data: str) -> None:
        if self.skipping is not None:
            return
        if self.in_title:
            self.title_parts.append(data)
        else:
            self.walker.text(data)


class _BlockWalker:
    """Turns start tags, end tags and text into blocks. Keeps counters, not a
    stack, so nesting depth costs nothing."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.ids: list[str] = []
        self.heading_level = 0
        self.heading_depth = 0
        self.pre_depth = 0
        self.table_depth = 0
        self.row: list[str] = []
        self.rows: list[list[str]] = []

    def start_tag(self, name: str, attributes: Mapping[str, str | None]) -> list[Block]:
        blocks: list[Block] = []
        if self.pre_depth:
            # Everything inside <pre> is literal text.
            if name == "pre":
                self.pre_depth += 1
            elif name == "br":
                self.parts.append(_LINE_BREAK)
        elif self.heading_depth:
            if name in _HEADING_TAGS:
                self.heading_depth += 1
            elif name == "br":
                self.parts.append(" ")
        elif self.table_depth:
            # Blocks inside cells stay part of their row.
            if name == "table":
                self.table_depth += 1
            elif name == "tr":
                self._end_row()
            elif name in _CELL_TAGS:
                self._end_cell()
            elif name == "br":
                self.parts.append(" ")
        elif name in _HEADING_TAGS:
            blocks.extend(self.flush())
            self.heading_level = _HEADING_TAGS[name]
            self.heading_depth = 1
        elif name == "pre":
            blocks.extend(self.flush())
            self.pre_depth = 1
        elif name == "table":
            blocks.extend(self.flush())
            self.table_depth = 1
        elif name in _BLOCK_TAGS:
            blocks.extend(self.flush())
        elif name == "br":
            self.parts.append(_LINE_BREAK)
        elif name == "img" and attributes.get("alt"):
            self.parts.append(f" {attributes.get('alt')} ")
        anchor = attributes.get("id") or (attributes.get("name") if name == "a" else None)
        if anchor:
            self.ids.append(anchor)
        return blocks

    def end_tag(self, name: str) -> list[Block]:
        blocks: list[Block] = []
        if self.pre_depth:
            if name == "pre":
                self.pre_depth -= 1
                if not self.pre_depth:
                    blocks.extend(self._emit("pre"))
        elif self.heading_depth:
            if name in _HEADING_TAGS:
                self.heading_depth -= 1
                if not self.heading_depth:
                    blocks.extend(self._emit("heading"))
        elif self.table_depth:
            if name == "table":
                self.table_depth -= 1
                if not self.table_depth:
                    self._end_row()
                    blocks.extend(self._emit_table())
            elif name in _CELL_TAGS:
                self._end_cell()
            elif name == "tr":
                self._end_row()
        elif name in _BLOCK_TAGS:
            blocks.extend(self.flush())
        return blocks

    def text(self, text: str | None) -> None:
        if text:
            self.parts.append(text)

    def flush(self) -> list[Block]:
        if self.table_depth:
            self._end_row()
            return self._emit_table()
        return self._emit("pre" if self.pre_depth else ("heading" if self.heading_depth else "text"))

    def _end_cell(self) -> None:
        cell = _collapse("".join(self.parts)).replace("\n", " ")
        self.parts.clear()
        if cell:
            self.row.append(cell)

    def _end_row(self) -> None:
        self._end_cell()
        if self.row:
            self.rows.append(self.row)
            self.row = []

    def _emit_table(self) -> list[Block]:
        rows, self.rows = self.rows, []
        if not rows:
            return []
        ids, self.ids = self.ids, []
        text = "\n".join(section.table_header + "\n" + section.text for section in table_sections(rows, structure={}))
        return [Block(kind="table", text=text.strip(), ids=ids, rows=rows)]

    def _emit(self, kind: str) -> list[Block]:
        raw = "".join(self.parts)
        self.parts.clear()
        if kind == "pre":
            text = normalise_text(raw.replace(_LINE_BREAK, "\n")).strip("\n").rstrip()
        else:
            text = _collapse(raw)
        if not text.strip():
            # Anchors on empty elements belong to the next block with text.
            return []
        ids, self.ids = self.ids, []
        return [Block(kind=kind, text=text, level=self.heading_level if kind == "heading" else 0, ids=ids)]


def _collapse(raw: str) -> str:
    """HTML whitespace rules: runs collapse to one space; <br> line breaks
    survive."""
    lines = (_WHITESPACE.sub(" ", line).strip() for line in raw.split(_LINE_BREAK))
    return "\n".join(line for line in lines if line)


def _first_h1(blocks: list[Block]) -> str | None:
    for block in blocks:
        if block.kind == "heading" and block.level == 1:
            return block.text[:MAX_TITLE_CHARS]
    return None


def _sections(blocks: list[Block], title: str) -> Iterator[Section]:
    heading_stack: list[tuple[int, str]] = []

    def structure() -> dict:
        return {
            "title": title,
            "heading_path": [text for _, text in heading_stack],
            "heading_level": heading_stack[-1][0] if heading_stack else 0,
        }

    current = structure()
    for block in blocks:
        if block.kind == "heading":
            while heading_stack and heading_stack[-1][0] >= block.level:
                heading_stack.pop()
            heading_stack.append((block.level, block.text[:MAX_TITLE_CHARS]))
            current = structure()
            yield Section(text=block.text, structure=current)
        else:
            yield from block.sections(current)
