"""Rows of the results table, and progress lines while they are measured."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

_START = time.monotonic()


def say(message: str) -> None:
    elapsed = time.monotonic() - _START
    print(f"[bench {elapsed:6.0f}s] {message}", flush=True)


@dataclass
class Result:
    row: str
    measured: str
    baseline: str
    ratio: float | None
    goal: str
    met: bool | None  # None: the row has no pass/fail goal (a figure to state)
    notes: list[str] = field(default_factory=list)


def format_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "-"
    if ratio >= 100:
        return f"{ratio:.0f}"
    if ratio >= 10:
        return f"{ratio:.1f}"
    return f"{ratio:.2f}"


def met_text(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "NO")


def table(results: list[Result]) -> str:
    header = ("row", "measured", "baseline", "ratio", "goal", "met?")
    lines = [(r.row, r.measured, r.baseline, format_ratio(r.ratio), r.goal, met_text(r.met)) for r in results]
    widths = [max(len(str(cells[i])) for cells in [header, *lines]) for i in range(len(header))]

    def render(cells) -> str:
        return "| " + " | ".join(str(cell).ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([render(header), rule, *(render(cells) for cells in lines)])
