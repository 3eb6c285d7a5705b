"""The soak's figures from its samples: plain functions of numbers and key
names, no Django, no Redis (unit-tested in tests/bench/test_soak_figures.py)."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NUMBER = re.compile(r"\d+")


def rates_by_part(samples: Sequence[tuple[float, float]], start: float, end: float, parts: int = 10) -> list[float]:
    """Units per second in each of `parts` equal stretches of [start, end],
    from samples of a cumulative count (time, count) in time order; the
    count between two samples is taken as growing linearly."""
    if end <= start or len(samples) < 2:
        return []
    times, counts = zip(*samples, strict=True)
    edges = np.linspace(start, end, parts + 1)
    cumulative = np.interp(edges, times, counts)
    return list(np.diff(cumulative) / np.diff(edges))


def ratio(after: float | None, before: float | None) -> float | None:
    """after / before, or None when either is missing or before is zero."""
    if after is None or before is None or before == 0:
        return None
    return after / before


def window_median(points: Iterable[tuple[float, float]], start: float, end: float) -> float | None:
    """Median of the values whose time lies in [start, end]; None if none does."""
    values = [value for moment, value in points if start <= moment <= end]
    return statistics.median(values) if values else None


def first_and_last(
    points: Sequence[tuple[float, float]], start: float, end: float, fraction: float
) -> tuple[float | None, float | None]:
    """Medians of the values in the first and in the last `fraction` of
    [start, end] (a quarter: 0.25)."""
    width = (end - start) * fraction
    return window_median(points, start, start + width), window_median(points, end - width, end)


def first_and_last_count(
    points: Sequence[tuple[float, float]], start: float, end: float, count: int
) -> tuple[float | None, float | None]:
    """Medians of the values of the first and of the last `count` points
    whose time lies in [start, end] (fewer when there are fewer)."""
    inside = sorted((moment, value) for moment, value in points if start <= moment <= end)
    if not inside:
        return None, None
    return statistics.median(v for _, v in inside[:count]), statistics.median(v for _, v in inside[-count:])


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The `fraction` quantile (0.95: p95), interpolated between the two
    nearest values; None without values."""
    if not values:
        return None
    return float(np.quantile(np.asarray(values, dtype=float), fraction))


def key_shape(key: str, prefix: str = "") -> str:
    """A Redis key with the deployment's prefix cut off, uuids written
    `<uuid>` and numbers `#`: keys of one kind share a shape
    (`rank:document:#:#`, `celery-task-meta-<uuid>`)."""
    if prefix and key.startswith(prefix):
        key = key[len(prefix) :]
    return _NUMBER.sub("#", _UUID.sub("<uuid>", key))


def key_families(keys: Iterable[str], prefix: str = "") -> dict[str, int]:
    """Number of keys of each shape, most numerous first."""
    return dict(Counter(key_shape(key, prefix) for key in keys).most_common())


def longest_ttls(keys_and_ttls: Iterable[tuple[str, int]], prefix: str = "") -> dict[str, int]:
    """The longest time to live (seconds) among the keys of each shape, from
    (key, TTL) pairs as Redis's TTL answers them: -1, a key that never
    expires, makes its shape's -1."""
    longest: dict[str, int] = {}
    for key, ttl in keys_and_ttls:
        shape = key_shape(key, prefix)
        if longest.get(shape) == -1:
            continue
        longest[shape] = -1 if ttl == -1 else max(ttl, longest.get(shape, ttl))
    return longest


def per_document_families(families: dict[str, int], documents: int, ignore: Iterable[str] = ()) -> dict[str, int]:
    """The numbered or uuid-named shapes with at least one key per document
    (except those in `ignore`): what finished documents leave behind."""
    ignore = set(ignore)
    return {
        shape: count
        for shape, count in families.items()
        if count >= documents and ("#" in shape or "<uuid>" in shape) and shape not in ignore
    }
