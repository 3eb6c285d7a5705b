"""A migration's batches: the next model's vectors of the project's
searchable chunks, one batch per task (services.embedders tells the whole
story)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from common.pauses import pause_for_project
from documents import vectorindex
from documents.embeddings import get_embedder
from documents.embeddings.base import PermanentEmbeddingError, TransientEmbeddingError
from documents.models import Project
from documents.services.embedders import (
    SEARCHABLE,
    chunks_missing_next_vector,
    embedder_migration_fail,
    embedder_migration_switch,
    project_chunks,
)
from documents.services.transitions import project_lock_embedder
from jobs import services as job_services
from jobs.models import Job

# --- One batch --------------------------------------------------------------------


@dataclass(frozen=True)
class StepOutcome:
    """What one batch task did: `continue` (send the next), `switched`,
    `stopped` (the job is over or no longer the project's), `paused`
    (look again in `retry_in` seconds), `retry` (transient provider failure,
    again in `retry_in` seconds) or `failed`."""

    status: str
    retry_in: float | None = None


def embedder_migration_step(*, job_id: int, attempt: int = 0) -> StepOutcome:
    """Build the next vectors of one batch (MIRAGE_EMBEDDER_MIGRATION_BATCH_SIZE)
    of the project's searchable chunks, or switch when none is missing.
    Idempotent: a batch done twice stores the same vectors."""
    job = Job.objects.filter(id=job_id).first()
    if job is None or job.status != Job.Status.RUNNING:
        return StepOutcome("stopped")
    project = Project.objects.filter(id=job.project_id).first()
    if project is None or project.embedder_job_id != job_id or not project.next_embedder:
        embedder_migration_fail(job_id=job_id, error_type="not_found", message="the project or its migration is gone")
        return StepOutcome("stopped")
    if pause_for_project(project.id) is not None:
        # Keep the job's clock of progress fresh: a paused migration is not lost.
        job_services.job_set_progress(job_id=job_id, percentage=job.progress_percentage)
        return StepOutcome("paused", retry_in=float(settings.MIRAGE_RECONCILE_INTERVAL_SECONDS))
    job_services.job_mark_working(job_id=job_id)
    batch = list(
        chunks_missing_next_vector(project)
        .order_by("id")
        .values_list("id", "content", "content_sha256")[: settings.MIRAGE_EMBEDDER_MIGRATION_BATCH_SIZE]
    )
    if not batch:
        return StepOutcome("switched") if embedder_migration_switch(job_id=job_id) else StepOutcome("continue")
    try:
        vectors = _next_vectors(project, batch)
    except TransientEmbeddingError as exc:
        if attempt + 1 >= settings.MIRAGE_CHUNK_MAX_ATTEMPTS:
            embedder_migration_fail(
                job_id=job_id, error_type="embedding_failed", message=f"gave up after {attempt + 1} attempts: {exc}"
            )
            return StepOutcome("failed")
        backoff = min(
            settings.MIRAGE_RETRY_BACKOFF_MAX_SECONDS, settings.MIRAGE_RETRY_BACKOFF_BASE_SECONDS * 2.0**attempt
        )
        return StepOutcome("retry", retry_in=max(exc.retry_after or 0.0, backoff * (0.5 + random.random() / 2)))
    except PermanentEmbeddingError as exc:
        embedder_migration_fail(job_id=job_id, error_type="embedding_failed", message=str(exc))
        return StepOutcome("failed")
    stored = _store_next_vectors(project=project, job_id=job_id, vectors=vectors)
    _report_progress(project=project, job=job, stored=stored, truncated=sum(cut for *_, cut, _ in vectors))
    return StepOutcome("continue")


def _next_vectors(project: Project, batch: list[tuple[int, str, str]]) -> list[tuple[int, str, str, bool, bool]]:
    """(chunk id, sha, vector literal, truncated, from the provider) for each
    chunk of the batch: the cache's vector where it has one, else the next
    model's, in one provider call."""
    shas = {sha for _, _, sha in batch}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT text_sha256, embedding::text, truncated FROM documents_embeddingcacheentry "
            "WHERE model_id = %s AND text_sha256 = ANY(%s)",
            [project.next_embedding_model, list(shas)],
        )
        cached = {sha: (literal, truncated) for sha, literal, truncated in cursor.fetchall()}
    missing = [(chunk_id, content, sha) for chunk_id, content, sha in batch if sha not in cached]
    fresh: dict[int, tuple[str, bool]] = {}
    if missing:
        provider = get_embedder(project.next_embedder)
        if provider.model_id != project.next_embedding_model:
            raise PermanentEmbeddingError(
                f"the migration is to {project.next_embedding_model} but the provider serves {provider.model_id}"
            )
        results = provider.embed_batch([content for _, content, _ in missing])
        for (chunk_id, _, _), result in zip(missing, results, strict=True):
            if len(result.vector) != project.next_embedding_dimensions:
                raise PermanentEmbeddingError(
                    f"provider returned a {len(result.vector)}-dimensional vector; "
                    f"{project.next_embedding_model} has {project.next_embedding_dimensions}"
                )
            fresh[chunk_id] = (vectorindex.vector_literal(result.vector), result.truncated)
    vectors = []
    for chunk_id, _, sha in batch:
        if chunk_id in fresh:
            vectors.append((chunk_id, sha, *fresh[chunk_id], True))
        else:
            vectors.append((chunk_id, sha, cached[sha][0], cached[sha][1], False))
    return vectors


# Stores next vectors where the chunk still holds the same text and the
# project still migrates to that model under this job; fills the cache with
# those that came from the provider.
_STORE_NEXT_SQL = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(shas)s::text[], %(vectors)s::text[], %(truncated)s::bool[],
                         %(fresh)s::bool[]) AS i(id, sha, vector, truncated, fresh)
), stored AS (
    UPDATE documents_chunk AS c
       SET next_embedding = i.vector::vector, next_embedding_model = p.next_embedding_model
      FROM input AS i, documents_document AS d, documents_project AS p
     WHERE c.id = i.id AND c.content_sha256 = i.sha AND d.id = c.document_id AND p.id = d.project_id
       AND p.id = %(project)s AND p.embedder_job_id = %(job)s AND p.next_embedding_model = %(model)s
 RETURNING c.id
), cached AS (
    INSERT INTO documents_embeddingcacheentry (model_id, text_sha256, embedding, truncated, created_at)
    SELECT DISTINCT ON (i.sha) %(model)s, i.sha, i.vector::vector, i.truncated, now()
      FROM input AS i WHERE i.fresh
    ON CONFLICT (model_id, text_sha256) DO NOTHING
)
SELECT count(*) FROM stored
"""


def _store_next_vectors(*, project: Project, job_id: int, vectors: list) -> int:
    with transaction.atomic(), connection.cursor() as cursor:
        project_lock_embedder(project_id=project.id, shared=True)
        cursor.execute(
            _STORE_NEXT_SQL,
            {
                "ids": [row[0] for row in vectors],
                "shas": [row[1] for row in vectors],
                "vectors": [row[2] for row in vectors],
                "truncated": [row[3] for row in vectors],
                "fresh": [row[4] for row in vectors],
                "project": project.id,
                "job": job_id,
                "model": project.next_embedding_model,
            },
        )
        return cursor.fetchone()[0]


def _report_progress(*, project: Project, job: Job, stored: int, truncated: int) -> None:
    searchable = project_chunks(project.id).filter(status__in=SEARCHABLE)
    total = searchable.count()
    done = searchable.filter(next_embedding_model=project.next_embedding_model).count()
    job_services.job_set_progress(
        job_id=job.id,
        percentage=100 * done // max(total, 1),
        message=f"embedding {done}/{total} chunks with {project.next_embedding_model}",
        chunks_created=total,
    )
    if stored and (job.metadata.get("resends") or truncated):
        job_services.job_update_metadata(
            job_id=job.id, resends=0, truncated=int(job.metadata.get("truncated", 0)) + truncated
        )
