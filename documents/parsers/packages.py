"""Office packages (OOXML and OpenDocument ZIP files): what kind a package
is, by its own manifest, and the zip-bomb guard every office parser opens
its file through.

Python's zipfile stops inflating an entry at the size its header declares
(and then fails the CRC check), so refusing absurd declared sizes before
any library reads the package bounds what parsing can inflate."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

from lxml import etree

from .base import ParseError

# Budget hooks: the most a package may declare it inflates to. Real office
# files stay far below (a 100,000-row sheet is a few tens of MB of XML).
MAX_ENTRY_BYTES = 512 * 1024 * 1024
MAX_TOTAL_BYTES = 1024 * 1024 * 1024
MAX_ENTRIES = 20_000
# Deflate's ceiling is about 1,030:1; office XML compresses 5-50:1 and very
# repetitive sheets about 200:1. Entries past this ratio, once big enough to
# matter, are refused.
MAX_COMPRESSION_RATIO = 400
RATIO_CHECK_FROM_BYTES = 16 * 1024 * 1024

# Main document part content types, from [Content_Types].xml, by file type.
OOXML_MAIN_TYPES = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml": "docx",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml": "docx",
    "application/vnd.ms-word.document.macroEnabled.main+xml": "docx",
    "application/vnd.ms-word.template.macroEnabledTemplate.main+xml": "docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml": "pptx",
    "application/vnd.openxmlformats-officedocument.presentationml.slideshow.main+xml": "pptx",
    "application/vnd.openxmlformats-officedocument.presentationml.template.main+xml": "pptx",
    "application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml": "pptx",
    "application/vnd.ms-powerpoint.slideshow.macroEnabled.main+xml": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml": "xlsx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml": "xlsx",
    "application/vnd.ms-excel.sheet.macroEnabled.main+xml": "xlsx",
    "application/vnd.ms-excel.template.macroEnabled.main+xml": "xlsx",
}
# The `mimetype` entry of an OpenDocument package, by file type.
ODF_MIMETYPES = {
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.text-template": "odt",
    "application/vnd.oasis.opendocument.presentation": "odp",
    "application/vnd.oasis.opendocument.presentation-template": "odp",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.spreadsheet-template": "ods",
}
FORMAT_NAMES = {
    "docx": "a Word document (.docx)",
    "pptx": "a PowerPoint presentation (.pptx)",
    "xlsx": "an Excel workbook (.xlsx)",
    "odt": "an OpenDocument text (.odt)",
    "odp": "an OpenDocument presentation (.odp)",
    "ods": "an OpenDocument spreadsheet (.ods)",
}
_CONTENT_TYPES = "[Content_Types].xml"
_MANIFEST_LIMIT = 1024 * 1024
_XML_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def open_package(path: Path, *, file_type: str) -> zipfile.ZipFile:
    """The package at `path`, opened after the zip-bomb guard and a check
    that its manifest says it is `file_type`. Raises ParseError naming what
    is wrong."""
    name = FORMAT_NAMES[file_type]
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError, NotImplementedError, OSError) as error:
        raise ParseError(
            f"file is damaged or truncated: the ZIP package of {name} has no readable central directory"
        ) from error
    try:
        check_budget(archive)
        found = package_kind(archive)
        if found is None:
            raise ParseError(f"file is a ZIP archive without the package manifest of {name}")
        if found != file_type:
            raise ParseError(f"file content is {FORMAT_NAMES[found]}, not {name}")
    except BaseException:
        archive.close()
        raise
    return archive


def check_budget(archive: zipfile.ZipFile) -> None:
    """Refuse a package whose entries declare absurd inflated sizes or
    compression ratios, before anything is inflated."""
    entries = archive.infolist()
    if len(entries) > MAX_ENTRIES:
        raise ParseError(f"file holds more than {MAX_ENTRIES} packed files; refusing to unpack it")
    total = 0
    for entry in entries:
        if entry.flag_bits & 0x1:
            raise ParseError("file is encrypted with a ZIP password; upload a copy without password protection")
        if entry.file_size > MAX_ENTRY_BYTES:
            raise ParseError(
                f"file looks like a zip bomb: {entry.filename} would inflate to "
                f"{entry.file_size // (1024 * 1024)} MB, over the {MAX_ENTRY_BYTES // (1024 * 1024)} MB limit"
            )
        if entry.file_size >= RATIO_CHECK_FROM_BYTES and entry.file_size > MAX_COMPRESSION_RATIO * max(
            1, entry.compress_size
        ):
            raise ParseError(
                f"file looks like a zip bomb: {entry.filename} would inflate "
                f"{entry.file_size // max(1, entry.compress_size)} times, over the {MAX_COMPRESSION_RATIO}:1 limit"
            )
        total += entry.file_size
    if total > MAX_TOTAL_BYTES:
        raise ParseError(
            f"file looks like a zip bomb: its contents would inflate to {total // (1024 * 1024)} MB, "
            f"over the {MAX_TOTAL_BYTES // (1024 * 1024)} MB limit"
        )


def package_kind(archive: zipfile.ZipFile) -> str | None:
    """ "docx", "pptx", "xlsx", "odt", "odp" or "ods" as the package's own
    manifest says, or None for a ZIP file that is none of these."""
    names = set(archive.namelist())
    if "mimetype" in names:
        mimetype = _read_small(archive, "mimetype").decode("ascii", "replace").strip()
        if mimetype in ODF_MIMETYPES:
            return ODF_MIMETYPES[mimetype]
    if _CONTENT_TYPES in names:
        try:
            root = etree.fromstring(_read_small(archive, _CONTENT_TYPES), parser=_XML_PARSER)
        except etree.XMLSyntaxError as error:
            raise ParseError(f"file is damaged: its package manifest {_CONTENT_TYPES} is not valid XML") from error
        for element in root:
            file_type = OOXML_MAIN_TYPES.get((element.get("ContentType") or "").strip())
            if file_type is not None:
                return file_type
    return None


def _read_small(archive: zipfile.ZipFile, name: str) -> bytes:
    try:
        with archive.open(name) as member:
            data = member.read(_MANIFEST_LIMIT + 1)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError) as error:
        raise ParseError(f"file is damaged: its package entry {name} cannot be read ({error})") from error
    if len(data) > _MANIFEST_LIMIT:
        raise ParseError(f"file is damaged: its package entry {name} is implausibly large")
    return data
