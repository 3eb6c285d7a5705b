"""Where the shared test files are: `../shared/` beside the repository
(`corpus/`: real documents and bad inputs; `formats/`: office files and
scans made from them). Defined here once, for the tests and the benchmarks.

Without them a developer's run skips the tests that need them; a CI run
(`CI` set) fails them instead, so a missing corpus can never pass silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared"
# Real documents and bad inputs (see its MANIFEST.tsv).
CORPUS = SHARED / "corpus"
# Office files and scans made from the corpus (see its MANIFEST.tsv).
FORMATS = SHARED / "formats"
# Small files made for this repository's tests.
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "documents"


def require(path: Path = CORPUS) -> None:
    """Skip (fail in CI) unless `path` exists."""
    if path.exists():
        return
    message = f"the shared test files are missing: {path} (the repository must sit beside ../shared/)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def corpus_present() -> Path:
    require(CORPUS)
    return CORPUS


# For a test or a module: `@requires_corpus` / `pytestmark = [requires_corpus]`.
requires_corpus = pytest.mark.usefixtures("corpus_present")
