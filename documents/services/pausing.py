"""Pausing and resuming a project's work, or the whole deployment's.

A pause is a row in force in common.models.Pause (see common.pauses): paused
work keeps its statuses, and the API, events, admin and `docstatus` say
`paused` with the reason. While it is in force:

- admission leaves the project's jobs `pending` (jobs.admission);
- a parse that has not begun is deferred: the task marks its job
  (`parse_deferred_by_pause` in the job's metadata) and returns, leaving the
  document `pending`;
- no chunk of the project is claimed, so no new embedding call starts
  (a task that finds its chunk paused returns, leaving it `pending`);
- the reconcilers leave the project's work alone, and job timeouts do not
  count the paused time (metadata `paused_seconds`).

Resuming sends again what the pause held: the deferred parses, and for each
`indexing` document one new chord of its `pending` chunks (windowed, see
services.dispatch), whose callback finalises it. A chunk whose old task is still queued is claimed by one task
only (the claim is a conditional UPDATE), so nothing is embedded twice.
"""

from __future__ import annotations

import logging
import uuid

from django.db import transaction
from django.utils import timezone

from common import events as common_events
from common import history, pauses
from common.models import Pause, StatusChange
from documents import jobkinds
from documents.models import Chunk, Document, Project
from documents.services.dispatch import dispatch_chord, dispatch_job
from documents.services.transitions import document_record_repair
from jobs import services as job_services
from jobs.models import Job

logger = logging.getLogger(__name__)

DocStatus = Document.Status
ChunkStatus = Chunk.Status

PARSE_DEFERRED = "parse_deferred_by_pause"
RESUMED_AT = "resumed_at"
PAUSED_SECONDS = "paused_seconds"


def parse_defer_if_paused(*, job: Job, document: Document) -> bool:
    """Called by a parse before it begins (job and document locked): when the
    document's project or the deployment is paused, mark the job so that
    resume sends the parse again, and return True (the parse does nothing)."""
    pause = pauses.pause_for_project(document.project_id)
    if pause is None:
        return False
    Job.objects.filter(id=job.id).update(
        metadata={**job.metadata, PARSE_DEFERRED: True}, progress_message=f"paused: {pause.reason}"[:255]
    )
    document_record_repair(
        document_id=document.id, actor=history.WORKER, reason=f"parse deferred: {pauses.pause_words(pause)}"
    )
    logger.info("document %s: parse deferred (paused)", document.id)
    return True


def project_pause(*, project: Project, reason: str, actor: str) -> Pause:
    """Pause a project's work. Raises pauses.AlreadyPaused."""
    with transaction.atomic():
        pause = pauses.pause_begin(project_id=project.id, reason=reason, actor=actor)
        _record(project_ids=[project.id], actor=actor, paused=True, reason=reason, pause=pause)
    logger.warning("project %s paused by %s: %s", project.id, actor, reason)
    return pause


def project_resume(*, project: Project, actor: str, reason: str = "") -> Pause:
    """End a project's pause and send again what it held (unless the
    deployment is still paused). Raises pauses.NotPaused."""
    with transaction.atomic():
        pause = pauses.pause_end(project_id=project.id, actor=actor)
        _record(project_ids=[project.id], actor=actor, paused=False, reason=reason, pause=pause)
        _work_resume(project_ids=[project.id], pause=pause)
    logger.warning("project %s resumed by %s", project.id, actor)
    return pause


def deployment_pause(*, reason: str, actor: str) -> Pause:
    """Pause every project's work. Raises pauses.AlreadyPaused."""
    with transaction.atomic():
        pause = pauses.pause_begin(project_id=None, reason=reason, actor=actor)
        _record(project_ids=None, actor=actor, paused=True, reason=reason, pause=pause)
    logger.warning("deployment paused by %s: %s", actor, reason)
    return pause


def deployment_resume(*, actor: str, reason: str = "") -> Pause:
    """End the deployment's pause and send again what it held (projects
    paused on their own stay paused). Raises pauses.NotPaused."""
    with transaction.atomic():
        pause = pauses.pause_end(project_id=None, actor=actor)
        _record(project_ids=None, actor=actor, paused=False, reason=reason, pause=pause)
        _work_resume(project_ids=None, pause=pause)
    logger.warning("deployment resumed by %s", actor)
    return pause


def _record(*, project_ids: list[int] | None, actor: str, paused: bool, reason: str, pause: Pause) -> None:
    """The audit log of each project concerned, one history row per active
    document and job (same status both sides), and one event per project."""
    scope = "deployment" if pause.project_id is None else "project"
    action = f"{scope}.{'paused' if paused else 'resumed'}"
    words = f"{'paused' if paused else 'resumed'}" + (f": {reason}" if reason else "")
    if not paused:
        words += f" (paused {int((pause.resumed_at - pause.paused_at).total_seconds())} s: {pause.reason})"
    projects = Project.objects.all() if project_ids is None else Project.objects.filter(id__in=project_ids)
    ids = list(projects.values_list("id", flat=True))
    for project_id in ids:
        history.audit_record(
            project_id=project_id,
            actor=actor,
            action=action,
            target=f"{scope} {project_id if pause.project_id else ''}".strip(),
            reason=reason,
            pause_id=pause.id,
            pause_reason=pause.reason,
        )
    documents = Document.objects.filter(status__in=Document.ACTIVE_STATUSES)
    jobs = Job.objects.filter(status__in=Job.ACTIVE_STATUSES, kind__in=jobkinds.DOCUMENT_KINDS)
    if project_ids is not None:
        documents = documents.filter(project_id__in=project_ids)
        jobs = jobs.filter(project_id__in=project_ids)
    rows = [
        StatusChange(
            entity="document",
            entity_id=doc_id,
            project_id=project_id,
            from_status=status,
            to_status=status,
            actor=actor[:64],
            reason=f"{scope} {words}",
            job_id=job_id,
        )
        for doc_id, project_id, status, job_id in documents.values_list("id", "project_id", "status", "current_job_id")
    ] + [
        StatusChange(
            entity="job",
            entity_id=job_id,
            project_id=project_id,
            from_status=status,
            to_status=status,
            actor=actor[:64],
            reason=f"{scope} {words}",
            job_id=job_id,
        )
        for job_id, project_id, status in jobs.values_list("id", "project_id", "status")
    ]
    StatusChange.objects.bulk_create(rows, batch_size=1000)
    if paused:
        jobs.update(progress_message=f"paused: {pause.reason}"[:255], updated_at=timezone.now())
    data = {
        "paused": paused,
        "scope": scope,
        "reason": pause.reason,
        "by": actor,
        "paused_at": pause.paused_at.isoformat(),
        "resumed_at": pause.resumed_at.isoformat() if pause.resumed_at else None,
    }
    transaction.on_commit(
        lambda: [
            common_events.publish(
                project_id=project_id,
                event=f"project.{'paused' if paused else 'resumed'}",
                data={"project_id": project_id, **data},
            )
            for project_id in ids
        ]
    )


def _work_resume(*, project_ids: list[int] | None, pause: Pause) -> None:
    """Send again what the pause held, in the projects it no longer holds."""
    held = pauses.pauses_in_force()
    if held.deployment is not None:
        return
    now = timezone.now()
    jobs = Job.objects.select_for_update().filter(status=Job.Status.RUNNING, kind__in=jobkinds.DOCUMENT_KINDS)
    documents = Document.objects.filter(status=DocStatus.INDEXING, parsing_finished_at__isnull=False)
    if project_ids is not None:
        jobs = jobs.filter(project_id__in=project_ids)
        documents = documents.filter(project_id__in=project_ids)
    jobs = jobs.exclude(project_id__in=list(held.projects))
    documents = documents.exclude(project_id__in=list(held.projects))
    for job in jobs:
        metadata = dict(job.metadata)
        paused_since = max(pause.paused_at, job.started_at or pause.paused_at)
        metadata[PAUSED_SECONDS] = float(metadata.get(PAUSED_SECONDS, 0)) + (now - paused_since).total_seconds()
        metadata[RESUMED_AT] = now.isoformat()
        deferred = metadata.pop(PARSE_DEFERRED, False)
        Job.objects.filter(id=job.id).update(metadata=metadata, progress_message="resumed", updated_at=now)
        if deferred:
            transaction.on_commit(lambda job=job: dispatch_job(job))
    resent = 0
    for document_id, generation, priority in documents.values_list("id", "generation", "current_job__priority"):
        pending = Chunk.objects.filter(document_id=document_id, status=ChunkStatus.PENDING)
        chunk_ids = list(pending.order_by("position").values_list("id", flat=True))
        if not chunk_ids:
            continue
        pending.update(dispatched_at=now)
        resent += len(chunk_ids)
        transaction.on_commit(
            lambda d=document_id, g=generation, ids=chunk_ids, p=priority or Job.Priority.NORMAL: dispatch_chord(
                chunk_ids=ids, document_id=d, generation=g, chord_id=str(uuid.uuid4()), priority=p
            )
        )
    transaction.on_commit(job_services.jobs_admit_pending)
    logger.info("resume: %s pending chunks sent again", resent)


def paused_project_ids() -> set[int] | None:
    """For the reconcilers: the projects whose work is paused, or None when
    the whole deployment is (leave everything)."""
    held = pauses.pauses_in_force()
    return None if held.deployment is not None else set(held.projects)
