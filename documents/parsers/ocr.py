"""OCR for PDF pages without a usable text layer: pages rendered by pdfium
(pypdfium2), read by Tesseract (pytesseract runs the `tesseract` program).

Which pages need it is measured, not guessed: a page whose text layer is
missing or mostly not letters and digits (a font without a Unicode map
yields symbols and private-use characters), or very short over a picture,
is read again from its pixels. A page with a good text layer is never
OCR'd."""

from __future__ import annotations

import math
import os
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import pypdfium2
import pytesseract
from PIL import Image

from .base import ParseError

# Tesseract language codes joined by "+", e.g. "eng+deu"; the documents
# app sets it from MIRAGE_OCR_LANGUAGES when Django starts.
LANGUAGES = "eng"
# Tesseract reads best at about 300 dpi; a huge page is rendered smaller
# rather than over this many pixels (a 300 dpi A3 page is 17 million).
RENDER_DPI = 300
MAX_RENDER_PIXELS = 25_000_000
# One page that Tesseract cannot finish in this long fails alone; the whole
# parse stays under MIRAGE_PARSE_TIME_LIMIT_SECONDS through the task's limit.
PAGE_TIMEOUT_SECONDS = 180

# A text layer is usable when it has at least this many visible characters
# and enough of them are letters or digits, and little is unprintable.
MIN_TEXT_CHARS = 20
MIN_ALPHANUMERIC_SHARE = 0.5
MAX_UNPRINTABLE_SHARE = 0.1

# pdfium is not thread-safe; the test worker and embedded workers may run
# several parses in threads of one process.
PDFIUM_LOCK = threading.Lock()
# Tesseract's OpenMP threads fight the worker's own processes for cores: on
# a loaded two-core machine one thread per page is four times faster.
os.environ.setdefault("OMP_THREAD_LIMIT", "1")

_INSTALL_HINT = "install Tesseract on the ingest workers: apt-get install tesseract-ocr tesseract-ocr-eng"


def configure(*, languages: str) -> None:
    """Set the OCR languages ("eng", "eng+deu" or "eng,deu")."""
    global LANGUAGES
    LANGUAGES = normalise_languages(languages)


def normalise_languages(languages: str) -> str:
    codes = [code.strip() for code in languages.replace(",", "+").split("+") if code.strip()]
    return "+".join(codes) or "eng"


@dataclass(frozen=True)
class TextLayerQuality:
    visible_chars: int
    alphanumeric_share: float
    unprintable_share: float

    @property
    def usable(self) -> bool:
        return (
            self.visible_chars >= MIN_TEXT_CHARS
            and self.alphanumeric_share >= MIN_ALPHANUMERIC_SHARE
            and self.unprintable_share <= MAX_UNPRINTABLE_SHARE
        )

    @property
    def clean(self) -> bool:
        """Good text, however short (a page holding only its number)."""
        return (
            self.visible_chars > 0
            and self.alphanumeric_share >= MIN_ALPHANUMERIC_SHARE
            and (self.unprintable_share <= MAX_UNPRINTABLE_SHARE)
        )


def text_layer_quality(text: str) -> TextLayerQuality:
    # Dot leaders and rules ("Chapter 1 . . . . . 3") are layout, not
    # garbage: a table of contents is half dots.
    text = _LEADERS.sub(" ", text)
    visible = [char for char in text if not char.isspace()]
    if not visible:
        return TextLayerQuality(0, 0.0, 0.0)
    alphanumeric = sum(1 for char in visible if char.isalnum())
    unprintable = sum(1 for char in visible if _unprintable(char))
    return TextLayerQuality(len(visible), alphanumeric / len(visible), unprintable / len(visible))


_LEADERS = re.compile(r"(?:([.\-_·…=~*])[ \t]?)\1(?:[ \t]?\1)+")


def _unprintable(char: str) -> bool:
    # Controls, private-use glyphs, unassigned code points and U+FFFD.
    return char == "\ufffd" or unicodedata.category(char) in ("Cc", "Cf", "Co", "Cn", "Cs")


@dataclass(frozen=True)
class OcrPage:
    text: str
    # Tesseract's mean word confidence, 0-100 (0 when no word was found).
    confidence: float


class PageReader:
    """Renders pages of one PDF and reads them with Tesseract. Checks that
    Tesseract and the configured languages are installed on first use."""

    def __init__(self, path: Path, *, languages: str | None = None) -> None:
        self.path = path
        self.languages = normalise_languages(languages or LANGUAGES)
        self.document: pypdfium2.PdfDocument | None = None
        self.checked = False

    def read(self, page_index: int) -> OcrPage:
        if not self.checked:
            check_tesseract(self.languages)
            self.checked = True
        image = self._render(page_index)
        try:
            return recognise(image, languages=self.languages)
        finally:
            image.close()

    def close(self) -> None:
        if self.document is not None:
            with PDFIUM_LOCK:
                self.document.close()
            self.document = None

    def _render(self, page_index: int) -> Image.Image:
        with PDFIUM_LOCK:
            try:
                if self.document is None:
                    self.document = pypdfium2.PdfDocument(str(self.path))
                page = self.document[page_index]
                try:
                    width, height = page.get_size()
                    scale = RENDER_DPI / 72
                    pixels = width * height * scale * scale
                    if pixels > MAX_RENDER_PIXELS:
                        scale *= math.sqrt(MAX_RENDER_PIXELS / pixels)
                    bitmap = page.render(scale=scale, grayscale=True)
                    try:
                        return bitmap.to_pil().copy()
                    finally:
                        bitmap.close()
                finally:
                    page.close()
            except pypdfium2.PdfiumError as error:
                raise PageRenderError(f"page {page_index + 1} cannot be rendered for OCR ({error})") from error


class PageRenderError(Exception):
    """One page could not be rendered; the others may still be read."""


def check_tesseract(languages: str) -> None:
    """Raise ParseError saying what to install when Tesseract or one of the
    languages is missing."""
    try:
        pytesseract.get_tesseract_version()
        installed = set(pytesseract.get_languages(config=""))
    except (pytesseract.TesseractNotFoundError, FileNotFoundError, OSError) as error:
        raise ParseError(
            f"this PDF has pages without a usable text layer that need OCR, but Tesseract is not installed; "
            f"{_INSTALL_HINT}"
        ) from error
    missing = [code for code in languages.split("+") if code not in installed]
    if missing:
        packages = " ".join(f"tesseract-ocr-{code.lower().replace('_', '-')}" for code in missing)
        raise ParseError(
            f"this PDF needs OCR in {', '.join(missing)} (MIRAGE_OCR_LANGUAGES), but Tesseract has no data "
            f"for it; install it on the ingest workers: apt-get install {packages}"
        )


def recognise(image: Image.Image, *, languages: str) -> OcrPage:
    """Text of `image` in reading order (lines joined by newlines, paragraphs
    by blank lines) and the mean confidence of its words."""
    try:
        data = pytesseract.image_to_data(
            image, lang=languages, output_type=pytesseract.Output.DICT, timeout=PAGE_TIMEOUT_SECONDS
        )
    except pytesseract.TesseractNotFoundError as error:
        raise ParseError(f"Tesseract is not installed; {_INSTALL_HINT}") from error
    except RuntimeError as error:  # pytesseract's timeout
        raise PageRenderError(f"OCR of a page did not finish within {PAGE_TIMEOUT_SECONDS} s") from error
    except pytesseract.TesseractError as error:
        raise PageRenderError(f"Tesseract failed on a page ({error.message or error.status})") from error
    paragraphs: list[list[list[str]]] = []
    last_paragraph = last_line = None
    confidences: list[float] = []
    for index, word in enumerate(data["text"]):
        word = (word or "").strip()
        if not word:
            continue
        paragraph_key = (data["page_num"][index], data["block_num"][index], data["par_num"][index])
        line_key = (*paragraph_key, data["line_num"][index])
        if paragraph_key != last_paragraph:
            paragraphs.append([])
            last_paragraph = paragraph_key
            last_line = None
        if line_key != last_line:
            paragraphs[-1].append([])
            last_line = line_key
        paragraphs[-1][-1].append(word)
        confidence = float(data["conf"][index])
        if confidence >= 0:
            confidences.append(confidence)
    text = "\n\n".join("\n".join(" ".join(line) for line in paragraph) for paragraph in paragraphs)
    mean = sum(confidences) / len(confidences) if confidences else 0.0
    return OcrPage(text=text, confidence=round(mean, 1))
