"""Moving a project to another embedding model without downtime.

A migration is a job (kind `migrate_embedder`). While it runs:

- the project keeps its pinned model (`embedder`, `embedding_model`,
  `embedding_dimensions`) and every search uses it; the model it moves to
  is in `next_embedder`, `next_embedding_model`, `next_embedding_dimensions`;
- its batch task (`documents.migrate_embedder`, one at a time per job, each
  sending the next) builds the next model's vector of every searchable
  chunk (`ready` or `corrupted`) into `Chunk.next_embedding`, taking what
  the embedding cache holds for (model, text); a chunk's status never
  changes for it;
- new uploads are embedded with both models (services.embedding);
- once no searchable chunk lacks its next vector, one transaction copies
  every next vector over the current one, drops the old vectors and pins
  the project to the new model (`embedder_migration_switch`).

Cancelling (or failing) the job drops the next vectors and leaves the old
model serving. The reconciler (`embedder_migrations_repair`) sends a batch
task again when a job's progress stalled for a lease (lost message, dead
worker), fails the job after MIRAGE_MAX_DISPATCH_ATTEMPTS such re-sends,
and clears a project whose migration job ended without switching.

Stores of chunk vectors hold the project's migration lock shared
(transitions.EMBEDDER_LOCK); the switch and a cancel hold it exclusively,
so a store sees the project's models from before or after them, never a
mix.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from common import history
from documents import jobkinds, vectorindex
from documents.embeddings import get_embedder
from documents.embeddings.base import EmbeddingError
from documents.models import Chunk, Project
from documents.services.pausing import paused_project_ids
from documents.services.transitions import project_lock_embedder
from jobs import services as job_services
from jobs.models import Job

logger = logging.getLogger(__name__)

SEARCHABLE = (Chunk.Status.READY, Chunk.Status.CORRUPTED)


class EmbedderRejected(Exception):
    """The spec names no embedder this deployment can build; the message says why."""


class EmbedderUnchanged(Exception):
    """The project already uses that model."""


class MigrationInProgress(Exception):
    """The project is already moving to another model; the message names the job."""


def project_chunks(project_id: int) -> QuerySet[Chunk]:
    return Chunk.objects.filter(document__project_id=project_id)


def chunks_missing_next_vector(project: Project) -> QuerySet[Chunk]:
    """The project's searchable chunks without a vector of its next model."""
    return (
        project_chunks(project.id)
        .filter(status__in=SEARCHABLE)
        .exclude(next_embedding_model=project.next_embedding_model)
    )


def _drop_next_vectors(project_id: int) -> int:
    return (
        project_chunks(project_id)
        .filter(Q(next_embedding__isnull=False) | ~Q(next_embedding_model=""))
        .update(next_embedding=None, next_embedding_model="")
    )


# --- Starting -----------------------------------------------------------------------


@transaction.atomic
def project_embedder_migrate(*, project: Project, embedder: str, actor: str = history.SYSTEM) -> Job:
    """Start moving `project` to the embedder `embedder` (a spec as for
    project_create). Returns the migration job (`pending`; it starts at once
    unless the project is paused).

    Raises EmbedderRejected (the spec cannot be built), EmbedderUnchanged
    (the project already uses that model) or MigrationInProgress."""
    spec = (embedder or "").strip()
    try:
        provider = get_embedder(spec)
    except (EmbeddingError, ValueError) as exc:
        raise EmbedderRejected(str(exc)) from None
    project = Project.objects.select_for_update().get(id=project.id)
    if project.next_embedder:
        job = Job.objects.filter(id=project.embedder_job_id).first()
        where = f" (job {job.id}, {job.status})" if job else ""
        raise MigrationInProgress(
            f"project {project.name!r} is already moving to {project.next_embedding_model}{where}; "
            "cancel that job first or wait for it to finish"
        )
    if provider.model_id == project.embedding_model and provider.dimensions == project.embedding_dimensions:
        raise EmbedderUnchanged(
            f"project {project.name!r} already uses {project.embedding_model} "
            f"({project.embedding_dimensions} dimensions): nothing to migrate"
        )
    job = job_services.job_create(
        kind=jobkinds.MIGRATE_EMBEDDER,
        project_id=project.id,
        subject_id=project.id,
        metadata={
            "from_embedder": project.embedder,
            "from_model": project.embedding_model,
            "to_embedder": spec,
            "to_model": provider.model_id,
            "to_dimensions": provider.dimensions,
            # What the admin's job list shows as the job's subject.
            "subject_label": f"{project.embedding_model} -> {provider.model_id}",
        },
        progress_message="waiting to start",
        actor=actor,
        reason=f"created: move to {provider.model_id}",
    )
    project_lock_embedder(project_id=project.id)
    # Vectors a cancelled migration may have left behind are dropped with it;
    # this is only a safety net.
    _drop_next_vectors(project.id)
    Project.objects.filter(id=project.id).update(
        next_embedder=spec,
        next_embedding_model=provider.model_id,
        next_embedding_dimensions=provider.dimensions,
        embedder_job=job,
    )
    history.audit_record(
        project_id=project.id,
        actor=actor,
        action="embedder.migration_started",
        target=f"project {project.name}",
        job_id=job.id,
        from_model=project.embedding_model,
        to_model=provider.model_id,
        embedder=spec,
    )
    model_id, dimensions = provider.model_id, provider.dimensions
    # The switched vectors are found through the new model's partial HNSW index.
    transaction.on_commit(lambda: vectorindex.ensure_index(model_id=model_id, dimensions=dimensions))
    return job


# --- The switch ---------------------------------------------------------------------

_SWITCH_SQL = """
UPDATE documents_chunk AS c
   SET embedding = c.next_embedding, embedding_model = c.next_embedding_model,
       next_embedding = NULL, next_embedding_model = ''
  FROM documents_document AS d
 WHERE d.id = c.document_id AND d.project_id = %(project)s AND c.next_embedding_model = %(model)s
"""
# Chunks that are not searchable (pending, processing, error) and hold no
# vector of the new model lose their old one: they are embedded with the
# new model when they run again.
_DROP_OLD_SQL = """
UPDATE documents_chunk AS c
   SET embedding = NULL, embedding_model = '', next_embedding = NULL, next_embedding_model = ''
  FROM documents_document AS d
 WHERE d.id = c.document_id AND d.project_id = %(project)s AND c.embedding_model <> %(model)s
   AND c.status NOT IN ('ready', 'corrupted')
"""


def embedder_migration_switch(*, job_id: int, actor: str = history.WORKER) -> bool:
    """Pin the project to its next model in one transaction, if every
    searchable chunk has its vector of that model: the vectors are copied
    over the old ones (which are gone after it), the project's model fields
    change, the switch is written to the project's audit log and the job
    completes. Returns False (nothing done) while a chunk still lacks its
    vector, or when the job is over."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(id=job_id, status=Job.Status.RUNNING).first()
        if job is None:
            return False
        project = Project.objects.select_for_update().filter(id=job.project_id, embedder_job_id=job_id).first()
        if project is None or not project.next_embedder:
            return False
        # No store is between reading the project's models and writing its
        # chunk now, and none starts until this commits.
        project_lock_embedder(project_id=project.id)
        if chunks_missing_next_vector(project).exists():
            return False
        old_model, new_model = project.embedding_model, project.next_embedding_model
        params = {"project": project.id, "model": new_model}
        with connection.cursor() as cursor:
            cursor.execute(_SWITCH_SQL, params)
            switched = cursor.rowcount
            cursor.execute(_DROP_OLD_SQL, params)
        Project.objects.filter(id=project.id).update(
            embedder=project.next_embedder,
            embedding_model=new_model,
            embedding_dimensions=project.next_embedding_dimensions,
            next_embedder="",
            next_embedding_model="",
            next_embedding_dimensions=None,
        )
        truncated = int(job.metadata.get("truncated", 0))
        history.audit_record(
            project_id=project.id,
            actor=actor,
            action="embedder.switched",
            target=f"project {project.name}",
            job_id=job_id,
            from_model=old_model,
            to_model=new_model,
            chunks=switched,
            truncated=truncated,
        )
        message = f"switched from {old_model} to {new_model}: {switched} chunks" + (
            f" ({truncated} embedded from truncated input)" if truncated else ""
        )
        job_services.job_complete(job_id=job_id, actor=actor, message=message)
    logger.info("project %s: %s", project.id, message)
    return True


# --- Stopping -----------------------------------------------------------------------


def embedder_migration_abandon(job: Job, *, actor: str, reason: str) -> None:
    """Drop a migration that will not switch (cancel hook of the kind, and
    the repairs; runs in the caller's transaction): the next vectors go,
    the project keeps its model and says so in its audit log."""
    project = (
        Project.objects.select_for_update()
        .filter(id=job.project_id, embedder_job_id=job.id)
        .exclude(next_embedder="")
        .first()
    )
    if project is None:
        return
    project_lock_embedder(project_id=project.id)
    dropped = _drop_next_vectors(project.id)
    Project.objects.filter(id=project.id).update(
        next_embedder="", next_embedding_model="", next_embedding_dimensions=None
    )
    job.refresh_from_db(fields=["status"])
    history.audit_record(
        project_id=project.id,
        actor=actor,
        action="embedder.migration_cancelled" if job.status == Job.Status.CANCELLED else "embedder.migration_failed",
        target=f"project {project.name}",
        job_id=job.id,
        model=project.embedding_model,
        abandoned_model=project.next_embedding_model,
        vectors_dropped=dropped,
        reason=reason,
    )


def embedder_migration_fail(*, job_id: int, error_type: str, message: str, actor: str = history.WORKER) -> None:
    with transaction.atomic():
        if job_services.job_fail(job_id=job_id, error_type=error_type, error_message=message, actor=actor):
            embedder_migration_abandon(Job.objects.get(id=job_id), actor=actor, reason=message)


# --- Repairs ------------------------------------------------------------------------


def embedder_migrations_repair() -> dict[str, int]:
    """What the reconciler mends (beat, every MIRAGE_RECONCILE_INTERVAL_SECONDS):

    - a running migration whose progress has not moved for a chunk lease
      (MIRAGE_CHUNK_LEASE_SECONDS: its batch task was lost, or its worker
      died) gets its batch task again; after MIRAGE_MAX_DISPATCH_ATTEMPTS
      such re-sends without progress it fails, and the old model keeps
      serving;
    - a project left with a next model whose migration job ended (or is
      gone) is cleared.
    """
    actor = history.reconciler_actor("repair_embedder_migrations")
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.MIRAGE_CHUNK_LEASE_SECONDS)
    paused = paused_project_ids()
    resent = failed = cleared = 0
    if paused is None:
        return {"resent": 0, "failed": 0, "cleared": 0}
    stalled = Job.objects.filter(
        kind=jobkinds.MIGRATE_EMBEDDER, status=Job.Status.RUNNING, updated_at__lt=stale_before
    ).exclude(project_id__in=paused)
    for job in stalled:
        resends = int(job.metadata.get("resends", 0))
        if resends >= settings.MIRAGE_MAX_DISPATCH_ATTEMPTS:
            embedder_migration_fail(
                job_id=job.id,
                error_type="dispatch_lost",
                message=f"its batch task was sent {resends + 1} times without progress",
                actor=actor,
            )
            failed += 1
            logger.warning("reconcile: embedder migration job %s made no progress; failed", job.id)
            continue
        with transaction.atomic():
            if not Job.objects.filter(id=job.id, status=Job.Status.RUNNING, updated_at__lt=stale_before).update(
                updated_at=now
            ):
                continue
            job_services.job_update_metadata(job_id=job.id, resends=resends + 1)
            history.status_change_record(
                entity="job",
                entity_id=job.id,
                project_id=job.project_id,
                from_status=job.status,
                to_status=job.status,
                actor=actor,
                reason=f"no progress for {settings.MIRAGE_CHUNK_LEASE_SECONDS} s (task lost or its worker died); "
                f"sent its batch task again ({resends + 1} of {settings.MIRAGE_MAX_DISPATCH_ATTEMPTS})",
                job_id=job.id,
            )
            transaction.on_commit(lambda job_id=job.id: dispatch_migration_step(job_id=job_id))
        resent += 1
        logger.warning("reconcile: re-sent the batch task of embedder migration job %s", job.id)
    orphaned = Project.objects.exclude(next_embedder="").filter(
        Q(embedder_job__isnull=True) | Q(embedder_job__status__in=Job.FINAL_STATUSES)
    )
    for project in orphaned:
        with transaction.atomic():
            job = Job.objects.filter(id=project.embedder_job_id).first()
            if job is None:
                cleared += _clear_without_job(project, actor=actor)
                continue
            embedder_migration_abandon(job, actor=actor, reason=f"its migration job ended ({job.status})")
            cleared += 1
    return {"resent": resent, "failed": failed, "cleared": cleared}


def _clear_without_job(project: Project, *, actor: str) -> int:
    project = Project.objects.select_for_update().filter(id=project.id, embedder_job__isnull=True).first()
    if project is None or not project.next_embedder:
        return 0
    project_lock_embedder(project_id=project.id)
    _drop_next_vectors(project.id)
    Project.objects.filter(id=project.id).update(
        next_embedder="", next_embedding_model="", next_embedding_dimensions=None
    )
    history.audit_record(
        project_id=project.id,
        actor=actor,
        action="embedder.migration_failed",
        target=f"project {project.name}",
        model=project.embedding_model,
        abandoned_model=project.next_embedding_model,
        reason="its migration job is gone",
    )
    return 1


def dispatch_migration_step(*, job_id: int, countdown: float | None = None) -> None:
    """Send the job's batch task, at the job's priority: the kind's run
    handler, each batch for the next, and the reconciler's re-send."""
    from celery import signature

    from documents.services.dispatch import broker_priority

    priority = Job.objects.filter(id=job_id).values_list("priority", flat=True).first()
    options = {"priority": broker_priority(priority)}
    if countdown:
        options["countdown"] = countdown
    result = signature("documents.migrate_embedder", args=[job_id]).apply_async(**options)
    job_services.job_set_task_ids(job_id=job_id, task_id=result.id)


def migration_state(project: Project) -> dict | None:
    """The project's migration under way, for the API and the admin."""
    if not project.next_embedder:
        return None
    return {
        "embedder": project.next_embedder,
        "embedding_model": project.next_embedding_model,
        "embedding_dimensions": project.next_embedding_dimensions,
        "job": Job.objects.filter(id=project.embedder_job_id).first(),
    }
