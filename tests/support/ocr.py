"""Whether Tesseract (and which languages) is installed, for tests that need
OCR: they skip and say what to install where it is not (`make ocr`)."""

from __future__ import annotations

import functools
import shutil
import subprocess

import pytest


@functools.cache
def tesseract_languages() -> frozenset[str]:
    if shutil.which("tesseract") is None:
        return frozenset()
    listing = subprocess.run(["tesseract", "--list-langs"], capture_output=True, text=True, check=False)
    return frozenset(line.strip() for line in listing.stdout.splitlines()[1:] if line.strip())


def requires_tesseract(*languages: str) -> pytest.MarkDecorator:
    needed = set(languages or ("eng",))
    missing = needed - tesseract_languages()
    return pytest.mark.skipif(
        bool(missing),
        reason=f"Tesseract with {', '.join(sorted(needed))} not installed "
        f"(make ocr, or apt-get install tesseract-ocr {' '.join('tesseract-ocr-' + code for code in sorted(needed))})",
    )
