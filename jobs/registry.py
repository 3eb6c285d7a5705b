"""How each kind of job is run and cancelled.

The app that owns a kind registers it (documents does so in its AppConfig),
so `jobs` never imports the apps whose work it tracks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from jobs.models import Job


@dataclass(frozen=True)
class JobKindHandler:
    # Dispatches the job's work; called after the commit that admitted it.
    run: Callable[["Job"], None]
    # Stops the subject's work; called inside the cancelling transaction.
    cancel: Callable[["Job"], None] | None = None
    # Whether the job takes one of MIRAGE_MAX_CONCURRENT_INDEXING_JOBS slots.
    limited: bool = True


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
