"""Pauses in force: of one project, or of the whole deployment.

A pause lives in PostgreSQL (common.models.Pause), so it survives a restart
of every process. Work that is paused keeps its status; what a pause stops
is new work starting: admission of its jobs, the start of a parse, and the
claim of a chunk (the claim statement reads PAUSED_SQL, so a worker sees a
pause at its next claim, without a cache to expire). Work already running
(a parse under way, an embedding call in flight) finishes and is kept.

`jobs` and `documents` both read pauses by project id, so this module knows
nothing of either.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from common.models import Pause

# True when the project in `{project_id}` (an SQL expression) is paused, by
# its own pause or the deployment's.
PAUSED_SQL = (
    "EXISTS (SELECT 1 FROM common_pause AS pause WHERE pause.resumed_at IS NULL"
    " AND (pause.project_id IS NULL OR pause.project_id = {project_id}))"
)


class AlreadyPaused(Exception):
    """A pause of that scope is already in force; the message says since when and why."""


class NotPaused(Exception):
    """Nothing to resume: no pause of that scope is in force."""


def _scope_words(project_id: int | None) -> str:
    return f"project {project_id}" if project_id is not None else "the deployment"


def pause_begin(*, project_id: int | None, reason: str, actor: str) -> Pause:
    """Put a pause in force for a project (or, with `project_id` None, the
    deployment). Raises AlreadyPaused when one is in force."""
    try:
        with transaction.atomic():
            return Pause.objects.create(project_id=project_id, reason=reason, paused_by=actor[:64])
    except IntegrityError:
        current = pause_of(project_id=project_id)
        since = f" since {current.paused_at:%Y-%m-%d %H:%M:%S} UTC ({current.reason})" if current else ""
        raise AlreadyPaused(f"{_scope_words(project_id)} is already paused{since}") from None


def pause_end(*, project_id: int | None, actor: str) -> Pause:
    """End the pause in force for a project (or the deployment) and return
    it. Raises NotPaused when there is none."""
    with transaction.atomic():
        pause = Pause.objects.select_for_update().filter(project_id=project_id, resumed_at__isnull=True).first()
        if pause is None:
            raise NotPaused(f"{_scope_words(project_id)} is not paused")
        pause.resumed_at = timezone.now()
        pause.resumed_by = actor[:64]
        pause.save(update_fields=["resumed_at", "resumed_by"])
    return pause


def pause_of(*, project_id: int | None) -> Pause | None:
    """The pause in force of exactly this scope (not the deployment's for a project)."""
    return Pause.objects.filter(project_id=project_id, resumed_at__isnull=True).first()


@dataclass(frozen=True)
class PausesInForce:
    deployment: Pause | None
    projects: dict[int, Pause]

    def for_project(self, project_id: int | None) -> Pause | None:
        """The pause that holds a project's work: the deployment's first."""
        if self.deployment is not None:
            return self.deployment
        return self.projects.get(project_id) if project_id is not None else None


def pauses_in_force() -> PausesInForce:
    deployment, projects = None, {}
    for pause in Pause.objects.filter(resumed_at__isnull=True):
        if pause.project_id is None:
            deployment = pause
        else:
            projects[pause.project_id] = pause
    return PausesInForce(deployment=deployment, projects=projects)


def pause_for_project(project_id: int | None) -> Pause | None:
    """The pause holding this project's work, if any (the deployment's first)."""
    return Pause.objects.filter(resumed_at__isnull=True).filter(project_id__isnull=True).first() or (
        pause_of(project_id=project_id) if project_id is not None else None
    )


def pause_words(pause: Pause | None) -> str:
    """How the API and the CLI say why work is paused."""
    if pause is None:
        return ""
    scope = "the project" if pause.project_id is not None else "the deployment"
    return f"{scope} was paused by {pause.paused_by} at {pause.paused_at:%Y-%m-%d %H:%M:%S} UTC: {pause.reason}"


def pause_state(context: dict | None, *, project_id: int | None, active: bool = True) -> tuple[bool, str]:
    """(paused, reason) for a serializer: whether the work of this project
    (when `active`, i.e. not yet final) is held by a pause. The pauses in
    force are read once per response and kept in the serializer context."""
    if not active:
        return False, ""
    context = context if context is not None else {}
    held = context.get("_pauses_in_force")
    if held is None:
        held = context["_pauses_in_force"] = pauses_in_force()
    pause = held.for_project(project_id)
    return pause is not None, pause_words(pause)
