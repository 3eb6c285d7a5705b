"""Figures observed by tests (recovery times, counts), printed at the end of
the run and kept in artifacts/test-figures.jsonl."""

from __future__ import annotations

import json
import time
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
FIGURES_FILE = ARTIFACTS / "test-figures.jsonl"


def record(name: str, **values) -> None:
    entry = {"test": name, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **values}
    ARTIFACTS.mkdir(exist_ok=True)
    with open(FIGURES_FILE, "a") as handle:
        handle.write(json.dumps(entry, default=str) + "\n")


def mark_start() -> int:
    """Where this run's figures begin in FIGURES_FILE (they are appended
    there by every test process of the run, parallel ones included)."""
    return FIGURES_FILE.stat().st_size if FIGURES_FILE.exists() else 0


def recorded(since: int = 0) -> list[dict]:
    """The figures appended to FIGURES_FILE from offset `since` on."""
    if not FIGURES_FILE.exists():
        return []
    with open(FIGURES_FILE, "rb") as handle:
        handle.seek(since)
        return [json.loads(line) for line in handle.read().decode().splitlines() if line.strip()]
