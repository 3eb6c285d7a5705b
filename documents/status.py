"""Document status from chunk counts: one pure function, used by the chord
callback, the reconcilers and the invariant checker alike."""

from __future__ import annotations

from collections.abc import Mapping

PENDING, PROCESSING, READY, CORRUPTED, ERROR = "pending", "processing", "ready", "corrupted", "error"


def derive_document_status(chunk_counts: Mapping[str, int]) -> str:
    """Return the status a document's chunks say it has.

    - no chunks: `error` (nothing to search is never `ready`)
    - any chunk pending or processing: `indexing`
    - every chunk ready: `ready`
    - some ready or corrupted: `partial`
    - none usable: `error`
    """
    total = sum(chunk_counts.values())
    if total == 0:
        return "error"
    if chunk_counts.get(PENDING, 0) or chunk_counts.get(PROCESSING, 0):
        return "indexing"
    ready = chunk_counts.get(READY, 0)
    if ready == total:
        return "ready"
    if ready + chunk_counts.get(CORRUPTED, 0) > 0:
        return "partial"
    return "error"
