"""Where the shared test inputs live: ../shared next to the checkout."""

from __future__ import annotations

from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared"
# Real documents and bad inputs (see its MANIFEST.tsv).
CORPUS = SHARED / "corpus"
# Office files and scans made from the corpus (see its MANIFEST.tsv).
FORMATS = SHARED / "formats"
# Small files made for this repository's tests.
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "documents"
