"""Loaded into benchmark workers with `--include`: the no-op chord's tasks,
and a remote-control command that reads the embed worker's coalescer
counters without adding anything to the measured tasks."""

from __future__ import annotations

import time

from celery import shared_task
from celery.worker.control import control_command


@shared_task(name="bench.noop")
def noop(number: int) -> str:
    return "ok"


@shared_task(name="bench.noop_callback")
def noop_callback() -> float:
    """Returns when it ran (wall clock), so the caller's polling for the
    result adds nothing to the measured time."""
    return time.time()


@control_command()
def bench_batcher_stats(state) -> dict:
    """Batches and items of each coalescer in this worker process (the
    threads pool shares one process): model calls, claim and store
    statements."""
    from documents.embeddings import registry
    from documents.services import embedding

    coalescers = {batcher.embedder.model_id: batcher for batcher in list(registry._batchers.values())}
    coalescers |= {"claim statements": embedding._claims, "store statements": embedding._stores}
    return {name: {"batches": each.batches, "items": each.items} for name, each in coalescers.items()}
