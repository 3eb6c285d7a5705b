"""Where a document's or a chunk's status changes: here, and only here.

Two tables say which moves exist. `document_transition` is the only writer
of Document.status and the `chunks_*` functions below are the only writers
of Chunk.status (a test fails on any other write). Every move:

- names the statuses it expects to leave, and raises IllegalTransition when
  the table does not allow one of those moves (a bug in the caller);
- applies the guard: the document's `generation` (a run that was overtaken
  writes nothing), a chunk's claimed `attempts` (a late or duplicate task
  writes nothing), and the status actually found, so a writer that lost a
  race gets "nothing done" back instead of overwriting newer state;
- writes `updated_at`;
- for documents, records the change in the history (common.history) and
  publishes one `document.status` event once the transaction commits.

Chunks change in batches and are too many to keep a history row each: a
chunk keeps its `attempts` and last `error`, and repairs done to a batch are
recorded as one row on its document (`document_record_repair`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from common import history, signals
from common.pauses import PAUSED_SQL
from documents import events
from documents.models import Chunk, Document
from jobs.models import Job

DocStatus = Document.Status
ChunkStatus = Chunk.Status

# Each status, and the statuses it may be entered from. A document is
# created `pending`.
DOCUMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    # A run begins: the first index, a reindex or a retry.
    DocStatus.INDEXING: frozenset(
        {DocStatus.PENDING, DocStatus.READY, DocStatus.PARTIAL, DocStatus.ERROR, DocStatus.CANCELLED}
    ),
    # A parse that died is sent again from the start.
    DocStatus.PENDING: frozenset({DocStatus.INDEXING}),
    # A run ends; a repair gives a finished document the status its chunks say.
    DocStatus.READY: frozenset({DocStatus.INDEXING, DocStatus.PARTIAL, DocStatus.ERROR}),
    DocStatus.PARTIAL: frozenset({DocStatus.INDEXING, DocStatus.READY, DocStatus.ERROR}),
    DocStatus.ERROR: frozenset({DocStatus.PENDING, DocStatus.INDEXING, DocStatus.READY, DocStatus.PARTIAL}),
    DocStatus.CANCELLED: frozenset({DocStatus.PENDING, DocStatus.INDEXING}),
}

CHUNK_TRANSITIONS: dict[str, frozenset[str]] = {
    # A worker claims it.
    ChunkStatus.PROCESSING: frozenset({ChunkStatus.PENDING}),
    # Its vector is stored (from truncated input: corrupted).
    ChunkStatus.READY: frozenset({ChunkStatus.PROCESSING}),
    ChunkStatus.CORRUPTED: frozenset({ChunkStatus.PROCESSING}),
    # It failed, ran out of attempts, was stranded, or its job failed.
    ChunkStatus.ERROR: frozenset({ChunkStatus.PENDING, ChunkStatus.PROCESSING}),
    # Given back for another attempt (transient failure, lost worker,
    # cancelled run), or queued again by a retry.
    ChunkStatus.PENDING: frozenset({ChunkStatus.PROCESSING, ChunkStatus.ERROR, ChunkStatus.CORRUPTED}),
}


class IllegalTransition(Exception):
    """A status move the tables do not allow; the message names the entity,
    the from and the to status."""


def _as_tuple(statuses) -> tuple[str, ...]:
    return (statuses,) if isinstance(statuses, str) else tuple(statuses)


def check_transition(*, entity: str, table: dict[str, frozenset[str]], from_statuses, to: str) -> None:
    allowed = table.get(to, frozenset())
    for source in _as_tuple(from_statuses):
        if source not in allowed:
            raise IllegalTransition(f"{entity}: illegal status transition {source} -> {to}")


# --- Documents -----------------------------------------------------------------


def lock_job_and_document(*, document_id: int, job_id: int | None = None) -> tuple[Job | None, Document | None]:
    """Lock a document's job row, then the document row: the one order every
    writer takes them in (job_cancel holds the job when it reaches the
    document), so two writers can never deadlock. Without `job_id`, the
    document's current job is locked."""
    if job_id is None:
        job_id = Document.objects.filter(id=document_id).values_list("current_job_id", flat=True).first()
    job = Job.objects.select_for_update().filter(id=job_id).first() if job_id else None
    document = Document.objects.select_for_update(of=("self",)).select_related("project").filter(id=document_id).first()
    return job, document


def document_transition(
    *,
    document_id: int,
    from_statuses,
    to: str,
    actor: str,
    reason: str = "",
    generation: int | None = None,
    new_generation: bool = False,
    job_id: int | None = None,
    **fields,
) -> Document | None:
    """The only writer of Document.status.

    Moves the document from one of `from_statuses` to `to`, under a row lock
    (take the job's lock first where there is one: see runs.lock_job_and_document).
    Returns the updated document, or None when the guard says no: the
    document is gone, is not in one of `from_statuses`, or its generation is
    no longer `generation`. `new_generation` starts a new run (every task of
    the old one becomes a no-op). `reason` goes into the history; `job_id`
    defaults to the document's current job.
    """
    from_statuses = _as_tuple(from_statuses)
    check_transition(entity=f"document {document_id}", table=DOCUMENT_TRANSITIONS, from_statuses=from_statuses, to=to)
    with transaction.atomic():
        document = (
            Document.objects.select_for_update(of=("self",)).select_related("project").filter(id=document_id).first()
        )
        if document is None or document.status not in from_statuses:
            return None
        if generation is not None and document.generation != generation:
            return None
        previous = document.status
        fields["status"] = to
        fields["updated_at"] = timezone.now()
        if new_generation:
            fields["generation"] = document.generation + 1
        Document.objects.filter(id=document_id).update(**fields)
        for name, value in fields.items():
            setattr(document, name, value)
        history.status_change_record(
            entity="document",
            entity_id=document.id,
            project_id=document.project_id,
            from_status=previous,
            to_status=to,
            actor=actor,
            reason=reason,
            job_id=job_id or document.current_job_id,
        )
        transaction.on_commit(lambda: events.publish_document(document))
        signals.document_status_changed.send(sender=Document, document=document, previous=previous)
    return document


def document_record_created(*, document: Document, actor: str, reason: str = "uploaded") -> None:
    """The first history row of a new (`pending`) document."""
    history.status_change_record(
        entity="document",
        entity_id=document.id,
        project_id=document.project_id,
        from_status="",
        to_status=document.status,
        actor=actor,
        reason=reason,
        job_id=document.current_job_id,
    )


def document_record_repair(*, document_id: int, actor: str, reason: str) -> None:
    """One history row for a repair done to a document's chunks (its own
    status unchanged): "re-sent 4 chunks stranded by a dead worker"."""
    row = Document.objects.filter(id=document_id).values("status", "project_id", "current_job_id").first()
    if row is None:
        return
    history.status_change_record(
        entity="document",
        entity_id=document_id,
        project_id=row["project_id"],
        from_status=row["status"],
        to_status=row["status"],
        actor=actor,
        reason=reason,
        job_id=row["current_job_id"],
    )


# --- Chunks ----------------------------------------------------------------------


def chunks_transition(*, chunks: QuerySet, from_statuses, to: str, **fields) -> int:
    """Move the chunks of `chunks` that are in one of `from_statuses` to `to`,
    in one UPDATE. Returns how many moved."""
    from_statuses = _as_tuple(from_statuses)
    check_transition(entity="chunk", table=CHUNK_TRANSITIONS, from_statuses=from_statuses, to=to)
    fields.setdefault("updated_at", timezone.now())
    return chunks.filter(status__in=from_statuses).update(status=to, **fields)


def chunk_transition_claimed(*, chunk_id: int, attempts: int, to: str, **fields) -> bool:
    """Move a chunk this worker claimed (`processing` under its `attempts`)
    to `to`. False when the claim was lost (re-dispatched, cancelled, or
    already final)."""
    fields.setdefault("lease_expires_at", None)
    return (
        chunks_transition(
            chunks=Chunk.objects.filter(id=chunk_id, attempts=attempts),
            from_statuses=ChunkStatus.PROCESSING,
            to=to,
            **fields,
        )
        == 1
    )


# One statement claims chunks (pending -> processing) and brings along
# everything their embedding needs: the project's model, the run's size and
# any cached vector. Only chunks of an `indexing` document are claimed, and
# none of a paused project or deployment (common.pauses): a pause stops new
# embedding calls at the next claim.
_CLAIM_SQL = f"""
UPDATE documents_chunk AS c
   SET status = 'processing', attempts = c.attempts + 1, claimed_at = now(),
       lease_expires_at = now() + make_interval(secs => %s), updated_at = now()
  FROM documents_document AS d JOIN documents_project AS p ON p.id = d.project_id
 WHERE c.id = ANY(%s) AND c.status = 'pending' AND d.id = c.document_id AND d.status = 'indexing'
   AND NOT {PAUSED_SQL.format(project_id="d.project_id")}
RETURNING c.id, c.attempts, c.content, c.content_sha256, c.position, c.document_id, d.generation,
          d.current_job_id, p.embedder, p.embedding_model, p.embedding_dimensions,
          (SELECT j.chunks_created FROM jobs_job j WHERE j.id = d.current_job_id),
          (SELECT e.embedding::text FROM documents_embeddingcacheentry e
            WHERE e.model_id = p.embedding_model AND e.text_sha256 = c.content_sha256),
          (SELECT e.truncated FROM documents_embeddingcacheentry e
            WHERE e.model_id = p.embedding_model AND e.text_sha256 = c.content_sha256),
          COALESCE((SELECT j.priority FROM jobs_job j WHERE j.id = d.current_job_id), 'normal')
"""


def chunks_claim(chunk_ids: Iterable[int]) -> list[tuple]:
    """Claim the pending chunks among `chunk_ids` for this worker with a lease
    of MIRAGE_CHUNK_LEASE_SECONDS; one row per claimed chunk (the columns of
    embedding.ClaimedChunk)."""
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [settings.MIRAGE_CHUNK_LEASE_SECONDS, list(set(chunk_ids))])
        return cursor.fetchall()


# Stores vectors under their claimed attempts (processing -> ready or
# corrupted) and, in the same statement, fills the embedding cache with those
# that came from the provider.
_STORE_SQL = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(statuses)s::text[], %(vectors)s::text[],
                         %(errors)s::text[], %(models)s::text[], %(shas)s::text[], %(truncated)s::bool[],
                         %(fill_cache)s::bool[])
        AS i(id, attempts, status, vector, error, model, sha, truncated, fill_cache)
), stored AS (
    UPDATE documents_chunk AS c
       SET status = i.status, embedding = i.vector::vector, embedding_model = i.model,
           error = i.error, lease_expires_at = NULL, updated_at = now()
      FROM input AS i
     WHERE c.id = i.id AND c.status = 'processing' AND c.attempts = i.attempts
 RETURNING c.id
), cached AS (
    INSERT INTO documents_embeddingcacheentry (model_id, text_sha256, embedding, truncated, created_at)
    SELECT DISTINCT ON (i.model, i.sha) i.model, i.sha, i.vector::vector, i.truncated, now()
      FROM input AS i JOIN stored ON stored.id = i.id
     WHERE i.fill_cache
    ON CONFLICT (model_id, text_sha256) DO NOTHING
)
SELECT id FROM stored
"""
TRUNCATED_ERROR = "input was truncated by the embedding model"


def chunks_store_vectors(
    *,
    ids: Sequence[int],
    attempts: Sequence[int],
    vectors: Sequence[str],
    truncated: Sequence[bool],
    models: Sequence[str],
    shas: Sequence[str],
    fill_cache: Sequence[bool],
) -> set[int]:
    """Store each chunk's vector (pgvector text) under its claimed attempts:
    `ready`, or `corrupted` when the model truncated the input. Returns the
    ids stored; a chunk whose claim was lost is left as it is."""
    statuses = [ChunkStatus.CORRUPTED if cut else ChunkStatus.READY for cut in truncated]
    with connection.cursor() as cursor:
        cursor.execute(
            _STORE_SQL,
            {
                "ids": list(ids),
                "attempts": list(attempts),
                "statuses": statuses,
                "vectors": list(vectors),
                "errors": [TRUNCATED_ERROR if cut else "" for cut in truncated],
                "models": list(models),
                "shas": list(shas),
                "truncated": list(truncated),
                "fill_cache": list(fill_cache),
            },
        )
        return {row[0] for row in cursor.fetchall()}
