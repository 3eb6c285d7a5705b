"""The argument lists that start Mirage's processes (the Procfile's worker,
beat and web), for code that runs them itself: the bench and the test
suite's own stacks and hosts."""

from __future__ import annotations

import sys
from pathlib import Path


def celery_worker(*, queues: str, node: str, pool: str = "prefork", concurrency: int = 1, options=()) -> list[str]:
    """A Celery worker consuming `queues` (comma-separated) as `node`."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "mirage",
        "worker",
        "-Q",
        queues,
        "-n",
        node,
        "--pool",
        pool,
        "--concurrency",
        str(concurrency),
        "-l",
        "info",
        *options,
    ]


def celery_beat(*, schedule: Path) -> list[str]:
    """Celery beat, keeping its schedule state in the file `schedule`."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "mirage",
        "beat",
        "-l",
        "info",
        "-S",
        "celery.beat:PersistentScheduler",
        "--schedule",
        str(schedule),
    ]


def web(*, host: str, port: int, options=()) -> list[str]:
    """The ASGI web app under uvicorn."""
    return [sys.executable, "-m", "uvicorn", "mirage.asgi:application", "--host", host, "--port", str(port), *options]
