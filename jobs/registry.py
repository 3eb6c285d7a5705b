"""How each kind of job is run and cancelled.

The app that owns a kind registers it (documents does so in its AppConfig),
so `jobs` never imports the apps whose work it tracks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobs.models import Job


@dataclass(frozen=True)
class JobKindHandler:
    # What operators read for the kind ("Index a document").
    label: str
    # Dispatches the job's work; called after the commit that admitted it.
    run: Callable[[Job], None]
    # Stops the subject's work; called inside the cancelling (or failing)
    # transaction with the job and who stopped it.
    cancel: Callable[..., None] | None = None
    # Whether the job takes one of MIRAGE_MAX_CONCURRENT_INDEXING_JOBS slots.
    limited: bool = True
    # Whether it fails after MIRAGE_INDEXING_JOB_TIMEOUT_SECONDS running; a
    # kind without the timeout must have a reconciler that ends it when its
    # work stops.
    times_out: bool = True


_handlers: dict[str, JobKindHandler] = {}


def register(kind: str, handler: JobKindHandler) -> None:
    _handlers[kind] = handler


def handler_for(kind: str) -> JobKindHandler:
    try:
        return _handlers[kind]
    except KeyError:
        raise LookupError(f"no handler registered for job kind {kind!r}") from None


def limited_kinds() -> list[str]:
    return [kind for kind, handler in _handlers.items() if handler.limited]


def timed_kinds() -> list[str]:
    return [kind for kind, handler in _handlers.items() if handler.times_out]


def kinds() -> list[tuple[str, str]]:
    """(kind, label) of every registered kind, for choices and filters."""
    return sorted((kind, handler.label) for kind, handler in _handlers.items())


def label_for(kind: str) -> str:
    handler = _handlers.get(kind)
    return handler.label if handler else kind
