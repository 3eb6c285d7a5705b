"""Loaded into benchmark workers with `--include`: the no-op chord's tasks,
and a remote-control command that reads the embed worker's micro-batcher
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
    """Batches and texts of each micro-batcher in this worker process (the
    threads pool shares one process)."""
    from documents import services
    from documents.embeddings import registry

    stats = {
        batcher.embedder.model_id: {"batches": batcher.batches, "texts": batcher.texts}
        for batcher in list(registry._batchers.values())
    }
    stats["claim statements"] = {"batches": services._claims.batches, "texts": services._claims.items}
    stats["store statements"] = {"batches": services._stores.batches, "texts": services._stores.items}
    return stats
