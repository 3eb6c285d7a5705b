"""EPUB 2 and 3, read straight from the ZIP with lxml.

Reading the container by hand (instead of through EbookLib) lets damaged
books fail with a precise message, tolerates manifest items missing from the
archive, and caps how much is decompressed."""

from __future__ import annotations

import posixpath
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lxml import etree

from .base import ParsedDocument, ParseError, Section, UnsupportedFileType
from .budgets import BudgetExceeded
from .detect import looks_binary
from .html import Block, local_name, parse_tree, read_markup, refuse_entity_expansion
from .text import MAX_TITLE_CHARS, title_from_filename

# Zip-bomb guards: a book's text is a few MB; its images are not read.
MAX_ENTRY_BYTES = 64 * 1024 * 1024
MAX_TOTAL_BYTES = 256 * 1024 * 1024
MAX_ENTRIES = 20_000
# An entry this large that claims more than MAX_RATIO x compression is a bomb
# (text compresses 3-10x; runs of one byte, 1000x).
RATIO_CHECK_BYTES = 8 * 1024 * 1024
MAX_RATIO = 200

_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, recover=True)
_CONTENT_MEDIA_TYPES = frozenset({"application/xhtml+xml", "text/html", "application/xml", "text/xml"})
_OPS_NAMESPACE = "http://www.idpf.org/2007/ops"
_BARE_ORDINAL = re.compile(r"(?:[IVXLCDM]+|\d+)\.?$", re.IGNORECASE)
_NOT_AN_EPUB = (
    "file content is a ZIP archive without the EPUB structure "
    "(no META-INF/container.xml or OPF package file), not an EPUB"
)


@dataclass(frozen=True)
class _ManifestItem:
    path: str
    media_type: str
    properties: frozenset[str]


@dataclass(frozen=True)
class _NavEntry:
    path: str
    fragment: str | None
    label: str


def parse(path: Path, filename: str) -> ParsedDocument:
    """Chapters in spine order, as sections with {"chapter", "chapter_index"
    (1-based, reading order), "title"}.

    Chapter titles come from the nav document (EPUB 3) or NCX (EPUB 2), else
    from the chapter's first heading. A spine file holding several chapters
    (found by navigation anchors, else by repeated top-level headings) is
    split into them. Manifest items missing from the archive are skipped and
    listed in `metadata["missing_items"]`."""
    archive = _open_archive(path)
    try:
        reader = _EntryReader(archive)
        package_path = _package_path(reader)
        package = _parse_xml(_read_required(reader, package_path), package_path)
        manifest, spine, toc_id = _manifest_and_spine(package, package_path)
        if not spine:
            raise ParseError("EPUB has no reading order (its spine is empty)")
        navigation = _navigation(reader, manifest, toc_id)
        title = _book_title(package) or title_from_filename(filename)
    except BaseException:
        archive.close()
        raise
    metadata = {
        "spine_items": len(spine),
        "missing_items": [],
        "unreadable_items": [],
        **_book_metadata(package),
    }
    return ParsedDocument(
        file_type="epub",
        title=title,
        sections=_chapter_sections(archive, reader, spine, navigation, title, metadata),
        metadata=metadata,
    )


def _open_archive(path: Path) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError) as error:
        raise ParseError(
            "EPUB is damaged or truncated: the ZIP archive's central directory is missing or unreadable"
        ) from error
    if len(archive.infolist()) > MAX_ENTRIES:
        archive.close()
        raise BudgetExceeded(
            f"EPUB has more than {MAX_ENTRIES} files; refusing to unpack it (decompression-bomb guard)",
            budget="decompression",
        )
    return archive


class _EntryReader:
    """Reads archive members by path, within the size caps."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.archive = archive
        self.total_bytes = 0
        self.names = {info.filename: info for info in archive.infolist()}
        # Packagers on case-insensitive file systems get the case of hrefs wrong.
        self.folded_names = {name.lower(): info for name, info in self.names.items()}

    def exists(self, name: str) -> bool:
        return self._info(name) is not None

    def read(self, name: str) -> bytes:
        info = self._info(name)
        if info is None:
            raise KeyError(name)
        if info.file_size > MAX_ENTRY_BYTES:
            raise BudgetExceeded(
                f"EPUB file {name} is {info.file_size // (1024 * 1024)} MB uncompressed, "
                f"over the {MAX_ENTRY_BYTES // (1024 * 1024)} MB limit (decompression-bomb guard)",
                budget="decompression",
            )
        if info.file_size > RATIO_CHECK_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise BudgetExceeded(
                f"EPUB file {name} declares {info.file_size // (1024 * 1024)} MB from "
                f"{info.compress_size // 1024} KB, more than {MAX_RATIO}x compression (decompression-bomb guard)",
                budget="decompression",
            )
        try:
            with self.archive.open(info) as member:
                data = member.read(MAX_ENTRY_BYTES + 1)
        # RuntimeError: an entry encrypted with a ZIP password.
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            OSError,
            ValueError,
            NotImplementedError,
            RuntimeError,
        ) as error:
            raise _UnreadableEntry(f"{name}: {error}") from error
        if len(data) > MAX_ENTRY_BYTES:
            raise BudgetExceeded(
                f"EPUB file {name} expands past the {MAX_ENTRY_BYTES // (1024 * 1024)} MB limit "
                "(decompression-bomb guard)",
                budget="decompression",
            )
        self.total_bytes += len(data)
        if self.total_bytes > MAX_TOTAL_BYTES:
            raise BudgetExceeded(
                f"EPUB expands to more than {MAX_TOTAL_BYTES // (1024 * 1024)} MB of text; refusing to unpack it "
                "(decompression-bomb guard)",
                budget="decompression",
            )
        return data

    def _info(self, name: str) -> zipfile.ZipInfo | None:
        return self.names.get(name) or self.folded_names.get(name.lower())


class _UnreadableEntry(Exception):
    """One archive member is damaged (bad CRC, truncated data)."""


def _parse_xml(data: bytes, name: str) -> etree._Element:
    try:
        root = etree.fromstring(data, parser=_XML_PARSER)
    except etree.XMLSyntaxError as error:
        raise ParseError(f"EPUB file {name} is not valid XML ({error})") from error
    if root is None:
        raise ParseError(f"EPUB file {name} is empty or not XML")
    refuse_entity_expansion(root, name=f"EPUB file {name}")
    return root


def _package_path(reader: _EntryReader) -> str:
    """Path of the OPF package document, from META-INF/container.xml (or the
    only .opf file, for packagers that forgot the container)."""
    container_name = "META-INF/container.xml"
    if reader.exists(container_name):
        container = _parse_xml(_read_required(reader, container_name), container_name)
        for element in container.iter():
            if local_name(element) == "rootfile":
                full_path = element.get("full-path")
                if full_path and (element.get("media-type") in (None, "application/oebps-package+xml")):
                    if not reader.exists(full_path):
                        raise ParseError(f"EPUB is incomplete: its package file {full_path} is missing")
                    return full_path
        raise ParseError("EPUB is damaged: META-INF/container.xml names no package file")
    packages = [name for name in reader.names if name.lower().endswith(".opf")]
    if len(packages) == 1:
        return packages[0]
    raise UnsupportedFileType(_NOT_AN_EPUB, detected_type="application/zip")


def _read_required(reader: _EntryReader, name: str) -> bytes:
    try:
        return reader.read(name)
    except _UnreadableEntry as error:
        raise ParseError(f"EPUB is damaged: {error}") from error


def _manifest_and_spine(
    package: etree._Element, package_path: str
) -> tuple[dict[str, _ManifestItem], list[_ManifestItem], str | None]:
    base = posixpath.dirname(package_path)
    manifest: dict[str, _ManifestItem] = {}
    spine_ids: list[str] = []
    toc_id = None
    for element in package.iter():
        name = local_name(element)
        if name == "item" and element.get("id") and element.get("href"):
            manifest[element.get("id")] = _ManifestItem(
                path=resolve_href(base, element.get("href")),
                media_type=(element.get("media-type") or "").strip().lower(),
                properties=frozenset((element.get("properties") or "").split()),
            )
        elif name == "spine":
            toc_id = element.get("toc")
        elif name == "itemref" and element.get("idref"):
            spine_ids.append(element.get("idref"))
    spine = [manifest[item_id] for item_id in spine_ids if item_id in manifest]
    return manifest, spine, toc_id


def resolve_href(base: str, href: str) -> str:
    """Archive path of `href` (URL-encoded, relative to the file at `base`)."""
    path = unquote(urlsplit(href).path)
    return posixpath.normpath(posixpath.join(base, path)).lstrip("/")


def _book_title(package: etree._Element) -> str | None:
    for element in package.iter():
        if local_name(element) == "title":
            title = _text(element)
            if title:
                return title[:MAX_TITLE_CHARS]
    return None


def _book_metadata(package: etree._Element) -> dict:
    metadata: dict[str, str] = {}
    for element in package.iter():
        name = local_name(element)
        if name in ("creator", "language", "publisher", "date") and name not in metadata:
            value = _text(element)
            if value:
                metadata[name] = value[:MAX_TITLE_CHARS]
    return metadata


def _navigation(reader: _EntryReader, manifest: dict[str, _ManifestItem], toc_id: str | None) -> list[_NavEntry]:
    """Table-of-contents entries in reading order: the EPUB 3 nav document,
    else the EPUB 2 NCX. Either may be listed but absent; that only costs
    chapter titles."""
    for item in manifest.values():
        if "nav" in item.properties:
            entries = _nav_document_entries(reader, item.path)
            if entries:
                return entries
    ncx_items = [manifest[toc_id]] if toc_id in manifest else []
    ncx_items += [item for item in manifest.values() if item.media_type == "application/x-dtbncx+xml"]
    for item in ncx_items:
        entries = _ncx_entries(reader, item.path)
        if entries:
            return entries
    return []


def _read_optional(reader: _EntryReader, name: str) -> bytes | None:
    try:
        return reader.read(name)
    except (KeyError, _UnreadableEntry):
        return None


def _nav_document_entries(reader: _EntryReader, nav_path: str) -> list[_NavEntry]:
    data = _read_optional(reader, nav_path)
    if data is None:
        return []
    root = parse_tree(data, xhtml=True)
    if root is None:
        return []
    navs = [element for element in root.iter() if local_name(element) == "nav"]
    toc = next(
        (
            nav
            for nav in navs
            if "toc" in (nav.get(f"{{{_OPS_NAMESPACE}}}type") or nav.get("epub:type") or "").split()
            or nav.get("role") == "doc-toc"
        ),
        navs[0] if navs else None,
    )
    if toc is None:
        return []
    base = posixpath.dirname(nav_path)
    entries = []
    for element in toc.iter():
        if local_name(element) == "a" and element.get("href"):
            label = _label(_text(element), _nav_parent_label(element))
            entries.append(_nav_entry(base, element.get("href"), label))
    return entries


def _nav_parent_label(link: etree._Element) -> str | None:
    """Label of the list item enclosing the link's own list item."""
    items = [element for element in link.iterancestors() if local_name(element) == "li"]
    if len(items) < 2:
        return None
    for child in items[1]:
        if local_name(child) in ("a", "span"):
            return _text(child)
    return None


def _text(element: etree._Element) -> str:
    return " ".join("".join(element.itertext()).split())


def _label(label: str, parent_label: str | None) -> str:
    # Sections numbered only "I", "II", ... under a story or part read
    # better with the parent's name.
    if parent_label and _BARE_ORDINAL.match(label):
        return f"{parent_label} — {label}"
    return label


def _ncx_entries(reader: _EntryReader, ncx_path: str) -> list[_NavEntry]:
    data = _read_optional(reader, ncx_path)
    if data is None:
        return []
    try:
        root = _parse_xml(data, ncx_path)
    except ParseError:
        return []
    base = posixpath.dirname(ncx_path)
    entries = []
    for element in root.iter():
        if local_name(element) != "navpoint":
            continue
        label, source = _ncx_point(element)
        if source:
            parent = element.getparent()
            parent_label = _ncx_point(parent)[0] if parent is not None and local_name(parent) == "navpoint" else None
            entries.append(_nav_entry(base, source, _label(label, parent_label)))
    return entries


def _ncx_point(nav_point: etree._Element) -> tuple[str, str | None]:
    label = ""
    source = None
    for child in nav_point:
        child_name = local_name(child)
        if child_name == "navlabel":
            label = _text(child)
        elif child_name == "content":
            source = child.get("src")
    return label, source


def _nav_entry(base: str, href: str, label: str) -> _NavEntry:
    fragment = urlsplit(href).fragment or None
    return _NavEntry(path=resolve_href(base, href), fragment=unquote(fragment) if fragment else None, label=label)


def _chapter_sections(
    archive: zipfile.ZipFile,
    reader: _EntryReader,
    spine: list[_ManifestItem],
    navigation: list[_NavEntry],
    title: str,
    metadata: dict,
) -> Iterator[Section]:
    # The entry for a whole file, and the first entry of any kind per file.
    file_labels: dict[str, str] = {}
    first_labels: dict[str, str] = {}
    anchors_by_path: dict[str, dict[str, str]] = {}
    for entry in navigation:
        if not entry.label:
            continue
        first_labels.setdefault(entry.path, entry.label)
        if entry.fragment is None:
            file_labels.setdefault(entry.path, entry.label)
        else:
            anchors_by_path.setdefault(entry.path, {}).setdefault(entry.fragment, entry.label)

    chapter_index = 0
    previous_label: str | None = None
    try:
        for item in spine:
            if item.media_type not in _CONTENT_MEDIA_TYPES and not item.path.lower().endswith(
                (".xhtml", ".html", ".htm")
            ):
                continue
            try:
                data = reader.read(item.path)
            except KeyError:
                metadata["missing_items"].append(item.path)
                continue
            except _UnreadableEntry:
                metadata["unreadable_items"].append(item.path)
                continue
            if looks_binary(data[:4096]):
                # DRM-encrypted or otherwise unreadable content document.
                metadata["unreadable_items"].append(item.path)
                continue
            page_title, blocks = read_markup(data, xhtml=True)
            if not blocks:
                continue
            in_navigation = item.path in first_labels
            chapters = _split_chapters(blocks, anchors_by_path.get(item.path, {}), in_navigation)
            # Text ahead of the first anchor is not what that anchor names.
            file_label = file_labels.get(item.path)
            if len(chapters) == 1 and chapters[0][0] is None:
                file_label = file_label or first_labels.get(item.path)
            for label, chapter_blocks in chapters:
                label = label or file_label or _first_heading(chapter_blocks) or page_title or previous_label
                chapter_index += 1
                label = label or f"Chapter {chapter_index}"
                previous_label = label
                structure = {"chapter": label, "chapter_index": chapter_index, "title": title}
                for block in chapter_blocks:
                    yield from block.sections(structure)
                # Only the first chapter of a file inherits the file's label.
                file_label = None
    finally:
        archive.close()
    if chapter_index == 0:
        if metadata["unreadable_items"]:
            raise ParseError("EPUB chapters cannot be read (damaged or DRM-encrypted content)")
        if metadata["missing_items"]:
            raise ParseError("EPUB is incomplete: none of its chapters are in the archive")
        raise ParseError("EPUB has no readable text")


def _split_chapters(
    blocks: list[Block], anchors: dict[str, str], in_navigation: bool
) -> list[tuple[str | None, list[Block]]]:
    """(label, blocks) per chapter inside one content document.

    Cut at navigation anchors when the document has them. A document the
    navigation does not mention at all (or a book without navigation) is cut
    at the highest heading level that occurs more than once: a whole book in
    one file. A document the navigation lists as one entry stays one
    chapter, so its numbered sections do not become chapters. A None label
    means "use the file's label"."""
    cuts: list[tuple[int, str]] = []
    if anchors:
        for index, block in enumerate(blocks):
            label = next((anchors[anchor] for anchor in block.ids if anchor in anchors), None)
            if label is not None:
                cuts.append((index, label))
    if not cuts and not in_navigation:
        headings = [(index, block) for index, block in enumerate(blocks) if block.kind == "heading"]
        for level in sorted({block.level for _, block in headings}):
            at_level = [(index, block.text[:MAX_TITLE_CHARS]) for index, block in headings if block.level == level]
            if len(at_level) > 1:
                cuts = at_level
                break
    if not cuts:
        return [(None, blocks)]
    chapters: list[tuple[str | None, list[Block]]] = []
    if cuts[0][0] > 0:
        chapters.append((None, blocks[: cuts[0][0]]))
    for position, (start, label) in enumerate(cuts):
        end = cuts[position + 1][0] if position + 1 < len(cuts) else len(blocks)
        chapters.append((label, blocks[start:end]))
    return chapters


def _first_heading(blocks: list[Block]) -> str | None:
    for block in blocks:
        if block.kind == "heading":
            return block.text[:MAX_TITLE_CHARS]
    return None
