"""Figures observed by tests (recovery times, counts), printed at the end of
the run and kept in artifacts/test-figures.jsonl."""

from __future__ import annotations

import json
import time
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
FIGURES_FILE = ARTIFACTS / "test-figures.jsonl"
_recorded: list[dict] = []


def record(name: str, **values) -> None:
    entry = {"test": name, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **values}
    _recorded.append(entry)
    ARTIFACTS.mkdir(exist_ok=True)
    with open(FIGURES_FILE, "a") as handle:
        handle.write(json.dumps(entry, default=str) + "\n")


def recorded() -> list[dict]:
    return list(_recorded)
