"""Logging filters."""

from __future__ import annotations

import logging


class QuietReconcilerTicks(logging.Filter):
    """Drops Celery's informational lines about the reconcilers' periodic
    tasks (beat sending one, a worker receiving it, its success): idle, they
    were most of the log. Repairs and failures are still logged (WARNING and
    above, by the reconcilers themselves and by Celery)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to judge
            return True
        return "reconcile." not in message
