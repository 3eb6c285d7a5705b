"""Content sniffing: decide a file's format from its first bytes, and refuse
binaries whatever their name says."""

from __future__ import annotations

import codecs
import re
import struct
import zlib
from pathlib import PurePath

from .base import ParseError, UnsupportedFileType
from .packages import ODF_MIMETYPES, OOXML_MAIN_TYPES

# How many leading bytes callers should pass to `detect_type`.
HEAD_SIZE = 8192

MARKDOWN_EXTENSIONS = frozenset({".md", ".markdown", ".mdown", ".mkd", ".mkdn"})
HTML_EXTENSIONS = frozenset({".html", ".htm", ".xhtml"})

# What each extension promises, for messages such as "..., not a PDF".
_EXPECTED_BY_EXTENSION = {
    ".pdf": "a PDF",
    ".epub": "an EPUB",
    ".docx": "a Word document",
    ".docm": "a Word document",
    ".pptx": "a PowerPoint presentation",
    ".pptm": "a PowerPoint presentation",
    ".xlsx": "an Excel workbook",
    ".xlsm": "an Excel workbook",
    ".odt": "an OpenDocument text",
    ".odp": "an OpenDocument presentation",
    ".ods": "an OpenDocument spreadsheet",
    ".txt": "plain text",
    ".text": "plain text",
    **{extension: "markdown" for extension in MARKDOWN_EXTENSIONS},
    **{extension: "HTML" for extension in HTML_EXTENSIONS},
}
_TEXT_EXTENSIONS = MARKDOWN_EXTENSIONS | HTML_EXTENSIONS | {".txt", ".text"}
_EXPECTED_FALLBACK = (
    "a supported document (markdown, PDF, EPUB, HTML, plain text, Word, PowerPoint, Excel or OpenDocument)"
)
# Packages whose manifest cannot be seen in the head are told apart by the
# folders of their parts, then by their name; the parser reads the manifest.
_OOXML_PART_FOLDERS = ((b"word/", "docx"), (b"ppt/", "pptx"), (b"xl/", "xlsx"))
_OOXML_EXTENSIONS = {
    ".docx": "docx",
    ".docm": "docx",
    ".dotx": "docx",
    ".pptx": "pptx",
    ".pptm": "pptx",
    ".ppsx": "pptx",
    ".potx": "pptx",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".xltx": "xlsx",
}
_PACKAGE_EXTENSIONS = frozenset({".epub", ".odt", ".odp", ".ods", *_OOXML_EXTENSIONS})
_ENCRYPTED_PACKAGE_STREAM = "EncryptedPackage".encode("utf-16-le")
_OLE_SIGNATURE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"

# (magic prefix, MIME-like type, human description). Checked in order.
_MAGIC_PREFIXES: tuple[tuple[bytes, str, str], ...] = (
    (b"\xff\xd8\xff", "image/jpeg", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "image/png", "a PNG image"),
    (b"GIF87a", "image/gif", "a GIF image"),
    (b"GIF89a", "image/gif", "a GIF image"),
    (b"II*\x00", "image/tiff", "a TIFF image"),
    (b"MM\x00*", "image/tiff", "a TIFF image"),
    (b"\x00\x00\x01\x00", "image/vnd.microsoft.icon", "an icon image"),
    (b"\x1f\x8b", "application/gzip", "a gzip archive"),
    (b"BZh91AY&SY", "application/x-bzip2", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "application/x-xz", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "application/vnd.rar", "a RAR archive"),
    (
        b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1",
        "application/x-ole-storage",
        "a legacy Microsoft Office document (.doc/.xls/.ppt)",
    ),
    (b"{\\rtf", "application/rtf", "an RTF document"),
    (b"%!PS", "application/postscript", "a PostScript file"),
    (b"\x7fELF", "application/x-executable", "an executable program"),
    (b"SQLite format 3\x00", "application/vnd.sqlite3", "an SQLite database"),
    (b"OggS\x00", "audio/ogg", "an Ogg audio/video file"),
    (b"ID3\x02\x00", "audio/mpeg", "an MP3 audio file"),
    (b"ID3\x03\x00", "audio/mpeg", "an MP3 audio file"),
    (b"ID3\x04\x00", "audio/mpeg", "an MP3 audio file"),
)
_RIFF_KINDS = {
    b"WEBP": ("image/webp", "a WebP image"),
    b"WAVE": ("audio/wav", "a WAV audio file"),
    b"AVI ": ("video/x-msvideo", "an AVI video"),
}
_ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
EPUB_MIMETYPE = b"application/epub+zip"

_TEXT_BOMS = (codecs.BOM_UTF8, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Bytes that do not occur in text: C0 controls other than \t \n \v \f \r and ESC.
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
# Shares of the head past which content is binary. Control bytes and NULs
# hardly occur in text in any encoding, but make up about a tenth of
# compressed or random data. Bytes that are not valid UTF-8 prove nothing:
# Latin-1 or Cyrillic text in a legacy encoding is full of them.
_MAX_NUL_RATIO = 0.01
_MAX_CONTROL_RATIO = 0.05

_HTML_START = re.compile(rb"(?:\s|<\?xml[^>]*\?>|<!--.*?-->)*<(?:!doctype\s+html|html[\s>])", re.IGNORECASE | re.DOTALL)
_SVG_START = re.compile(rb"(?:\s|<\?xml[^>]*\?>|<!--.*?-->|<!doctype\s+svg[^>]*>)*<svg[\s>]", re.IGNORECASE | re.DOTALL)


def detect_type(head: bytes, filename: str) -> str:
    """Return "markdown", "pdf", "epub", "text", "html", "docx", "pptx",
    "xlsx", "odt", "odp" or "ods" for a file whose first bytes (ideally
    `HEAD_SIZE` of them) are `head`.

    Content decides; the extension only chooses between markdown, HTML and
    plain text for content that is text. Raises ParseError for an empty file
    and UnsupportedFileType (with a MIME-like `detected_type`) for anything
    else, e.g. a JPEG named `.md`."""
    if not head:
        raise ParseError("file is empty")
    extension = PurePath(filename).suffix.lower()
    expected = _EXPECTED_BY_EXTENSION.get(extension, _EXPECTED_FALLBACK)

    # Readers accept a PDF header anywhere in the first KB (mail gateways
    # prepend junk); further in, in a file named as text, it is a mention.
    pdf_header = head.find(b"%PDF-", 0, 1024)
    if pdf_header == 0 or (pdf_header > 0 and extension not in _TEXT_EXTENSIONS):
        return "pdf"
    if head.startswith(_ZIP_SIGNATURES):
        return _detect_zip(head, expected, extension)
    if head.startswith(_OLE_SIGNATURE):
        _refuse_ole(head, expected, extension)
    magic = _detect_magic(head)
    if magic is not None:
        mime, description = magic
        raise UnsupportedFileType(f"file content is {description}, not {expected}", detected_type=mime)
    if looks_binary(head):
        hint = _damage_hint(extension)
        raise UnsupportedFileType(
            f"file content is binary data, not {expected}{hint}", detected_type="application/octet-stream"
        )

    text_head = _strip_text_bom(head)
    if _HTML_START.match(text_head):
        return "html"
    if _SVG_START.match(text_head):
        raise UnsupportedFileType(f"file content is an SVG image, not {expected}", detected_type="image/svg+xml")
    if extension in (".pdf", *_PACKAGE_EXTENSIONS):
        # Text inside a .pdf/.epub name is a damaged or mislabelled file;
        # indexing it as prose would store garbage.
        raise UnsupportedFileType(
            f"file content is plain text, not {expected}{_damage_hint(extension)}", detected_type="text/plain"
        )
    if extension in MARKDOWN_EXTENSIONS:
        return "markdown"
    if extension in HTML_EXTENSIONS:
        return "html"
    return "text"


def _damage_hint(extension: str) -> str:
    if extension == ".pdf":
        return " (no %PDF header: the file may be truncated or damaged)"
    if extension in _PACKAGE_EXTENSIONS:
        return " (not a ZIP archive: the file may be truncated or damaged)"
    return ""


def _detect_magic(head: bytes) -> tuple[str, str] | None:
    for prefix, mime, description in _MAGIC_PREFIXES:
        if head.startswith(prefix):
            return mime, description
    if head.startswith(b"RIFF") and head[8:12] in _RIFF_KINDS:
        return _RIFF_KINDS[head[8:12]]
    if head[4:8] == b"ftyp":
        return "video/mp4", "an MP4/QuickTime media file"
    return None


def _detect_zip(head: bytes, expected: str, extension: str) -> str:
    """The package's own manifest decides: the `mimetype` entry for EPUB and
    OpenDocument, [Content_Types].xml for Office Open XML. The name counts
    only for an Office package whose parts lie past the head."""
    first_name, first_data = _first_zip_entry(head)
    if first_name == b"mimetype":
        mimetype = first_data.strip()
        if mimetype.startswith(EPUB_MIMETYPE):
            return "epub"
        odf_type = ODF_MIMETYPES.get(mimetype.decode("ascii", "replace"))
        if odf_type is not None:
            return odf_type
        if mimetype.startswith(b"application/vnd.oasis.opendocument"):
            raise UnsupportedFileType(
                f"file content is an OpenDocument file of a kind that is not read "
                f"({mimetype.decode('ascii', 'replace')}; text, presentations and spreadsheets are), not {expected}",
                detected_type=mimetype.decode("ascii", "replace"),
            )
    # A packager that did not put `mimetype` first still writes the container
    # early; EPUB parsing verifies the rest.
    if b"META-INF/container.xml" in head:
        return "epub"
    if b"[Content_Types].xml" in head or b"_rels/.rels" in head:
        return _ooxml_kind(head, extension, expected)
    if expected == "an EPUB":
        raise UnsupportedFileType(
            "file content is a ZIP archive without the EPUB structure "
            "(no mimetype or META-INF/container.xml entry), not an EPUB",
            detected_type="application/zip",
        )
    raise UnsupportedFileType(
        f"file content is a plain ZIP archive (no Office, OpenDocument or EPUB manifest), not {expected}",
        detected_type="application/zip",
    )


def _ooxml_kind(head: bytes, extension: str, expected: str) -> str:
    first_name, _ = _first_zip_entry(head)
    if first_name == b"[Content_Types].xml":
        manifest = _inflate_first_entry(head)
        for content_type, file_type in OOXML_MAIN_TYPES.items():
            if content_type.encode("ascii") in manifest:
                return file_type
    for folder, file_type in _OOXML_PART_FOLDERS:
        if b"PK\x03\x04" in head and re.search(rb"PK\x03\x04.{26}" + re.escape(folder), head, re.DOTALL):
            return file_type
    if extension in _OOXML_EXTENSIONS:
        return _OOXML_EXTENSIONS[extension]
    raise UnsupportedFileType(
        f"file content is an Office Open XML package of a kind that is not read "
        f"(Word, PowerPoint and Excel files are), not {expected}",
        detected_type="application/vnd.openxmlformats-officedocument",
    )


def _inflate_first_entry(head: bytes) -> bytes:
    """As much of the first entry's data as the head holds, inflated."""
    (method,) = struct.unpack_from("<H", head, 8)
    name_length, extra_length = struct.unpack_from("<HH", head, 26)
    data = head[30 + name_length + extra_length :]
    if method == 0:
        return data
    try:
        return zlib.decompressobj(-zlib.MAX_WBITS).decompress(data, 256 * 1024)
    except zlib.error:
        return b""


def _refuse_ole(head: bytes, expected: str, extension: str) -> None:
    """An OLE compound file: a password-protected Office Open XML document
    (its encrypted package inside), or a legacy .doc/.xls/.ppt, which the
    magic-number table describes."""
    if _ENCRYPTED_PACKAGE_STREAM in head:
        raise UnsupportedFileType(
            "file is a password-protected Office document (an encrypted package); "
            "upload a copy saved without a password",
            detected_type="application/x-ole-storage",
        )
    if extension in _OOXML_EXTENSIONS:
        # The stream directory lies past the head: either kind is possible.
        raise UnsupportedFileType(
            f"file content is an OLE compound file, not {expected}: a password-protected Office document "
            "or a legacy .doc/.xls/.ppt file; upload a copy saved without a password in the current format",
            detected_type="application/x-ole-storage",
        )


def _first_zip_entry(head: bytes) -> tuple[bytes, bytes]:
    """Name and leading stored bytes of the first local file header."""
    if not head.startswith(b"PK\x03\x04") or len(head) < 30:
        return b"", b""
    (compressed_size,) = struct.unpack_from("<I", head, 18)
    name_length, extra_length = struct.unpack_from("<HH", head, 26)
    name = head[30 : 30 + name_length]
    data_start = 30 + name_length + extra_length
    # The size is zero when a data descriptor follows the data instead.
    return name, head[data_start : data_start + (compressed_size or 64)][:64]


def _strip_text_bom(head: bytes) -> bytes:
    if head.startswith(codecs.BOM_UTF8):
        return head[len(codecs.BOM_UTF8) :]
    for bom, encoding in (
        (codecs.BOM_UTF32_LE, "utf-32-le"),
        (codecs.BOM_UTF32_BE, "utf-32-be"),
        (codecs.BOM_UTF16_LE, "utf-16-le"),
        (codecs.BOM_UTF16_BE, "utf-16-be"),
    ):
        if head.startswith(bom):
            text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(head[len(bom) :])
            return text.encode("utf-8")
    return head


def looks_binary(head: bytes) -> bool:
    """True when `head` is not text in any encoding this package reads."""
    if head.startswith(_TEXT_BOMS):
        return False
    size = len(head)
    if head.count(0) > max(1, size * _MAX_NUL_RATIO):
        return True
    # An incremental decoder leaves a multi-byte character cut by the end of
    # the head undecoded instead of counting it as damage.
    return len(_CONTROL_BYTES.findall(head)) > size * _MAX_CONTROL_RATIO
