"""Which projects a (non-staff) user may see.

The app that owns projects registers the rule at start-up, so the apps that
only refer to projects by id (jobs, history, audit) scope their reads the
same way without importing it.
"""

from __future__ import annotations

from collections.abc import Callable

_project_scope: Callable[[object], object] | None = None


def register_project_scope(scope: Callable[[object], object]) -> None:
    global _project_scope
    _project_scope = scope


def visible_project_ids(user):
    """A queryset (or iterable) of the ids of the projects `user` may see."""
    if _project_scope is None:
        return []
    return _project_scope(user)
