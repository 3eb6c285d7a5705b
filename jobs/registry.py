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
    # Dispatches the job's work; called after the commit that admitted it.
    run: Callable[[Job], None]
    # Stops the subject's work; called inside the cancelling transaction.
    cancel: Callable[[Job], None] | None = None
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


# Which projects a (non-staff) user may see: set by the app that owns
# projects. Returns a queryset of ids or any iterable of ids.
_project_scope: Callable[[object], object] | None = None


def register_project_scope(scope: Callable[[object], object]) -> None:
    global _project_scope
    _project_scope = scope


def visible_project_ids(user):
    if _project_scope is None:
        return []
    return _project_scope(user)
