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
# any cached vector; while the project migrates to another model
# (services.embedders), that model too, with its cached vector: new chunks
# are embedded with both. Only chunks of an `indexing` document are claimed, and
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
          COALESCE((SELECT j.priority FROM jobs_job j WHERE j.id = d.current_job_id), 'normal'),
          p.next_embedder, p.next_embedding_model, p.next_embedding_dimensions,
          (SELECT e.embedding::text FROM documents_embeddingcacheentry e
            WHERE e.model_id = p.next_embedding_model AND e.text_sha256 = c.content_sha256),
          (SELECT e.truncated FROM documents_embeddingcacheentry e
            WHERE e.model_id = p.next_embedding_model AND e.text_sha256 = c.content_sha256)
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
#
# A claim made while the project migrated to another model carries both
# vectors. The project's models are read when the vectors are stored (under
# the project's migration lock, EMBEDDER_LOCK, taken shared): the vector of
# the project's current model becomes `embedding`, the next model's vector
# `next_embedding` while that migration is still under way. So a claim made
# before the switch and stored after it stores the new model's vector, and
# one stored after a cancel keeps no next vector. A chunk whose claim holds
# no vector of the project's current model (claimed before the migration
# began, stored after its switch) is not stored: its lease runs out and the
# reconciler sends it again.
_STORE_SQL = """
WITH input AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(vectors)s::text[], %(models)s::text[],
                         %(shas)s::text[], %(truncated)s::bool[], %(fill_cache)s::bool[], %(next_vectors)s::text[],
                         %(next_models)s::text[], %(next_truncated)s::bool[], %(next_fill_cache)s::bool[])
        AS i(id, attempts, vector, model, sha, truncated, fill_cache, next_vector, next_model, next_truncated,
             next_fill_cache)
), chosen AS (
    SELECT i.id, i.attempts, p.embedding_model AS model,
           CASE WHEN p.embedding_model = i.model THEN i.vector ELSE i.next_vector END AS vector,
           CASE WHEN p.embedding_model = i.model THEN i.truncated ELSE i.next_truncated END AS truncated,
           CASE WHEN p.embedding_model = i.model AND i.next_model <> '' AND p.next_embedding_model = i.next_model
                THEN i.next_vector END AS next_vector,
           CASE WHEN p.embedding_model = i.model AND i.next_model <> '' AND p.next_embedding_model = i.next_model
                THEN i.next_model ELSE '' END AS next_model
      FROM input AS i JOIN documents_chunk AS c ON c.id = i.id
      JOIN documents_document AS d ON d.id = c.document_id JOIN documents_project AS p ON p.id = d.project_id
     WHERE p.embedding_model = i.model OR (i.next_model <> '' AND p.embedding_model = i.next_model)
), stored AS (
    UPDATE documents_chunk AS c
       SET status = CASE WHEN ch.truncated THEN 'corrupted' ELSE 'ready' END,
           embedding = ch.vector::vector, embedding_model = ch.model,
           next_embedding = ch.next_vector::vector, next_embedding_model = ch.next_model,
           error = CASE WHEN ch.truncated THEN %(truncated_error)s ELSE '' END,
           lease_expires_at = NULL, updated_at = now()
      FROM chosen AS ch
     WHERE c.id = ch.id AND c.status = 'processing' AND c.attempts = ch.attempts
 RETURNING c.id, ch.truncated
), fresh AS (
    SELECT i.model, i.sha, i.vector, i.truncated FROM input AS i JOIN stored ON stored.id = i.id
     WHERE i.fill_cache
    UNION ALL
    SELECT i.next_model, i.sha, i.next_vector, i.next_truncated FROM input AS i JOIN stored ON stored.id = i.id
     WHERE i.next_fill_cache AND i.next_model <> ''
), cached AS (
    INSERT INTO documents_embeddingcacheentry (model_id, text_sha256, embedding, truncated, created_at)
    SELECT DISTINCT ON (f.model, f.sha) f.model, f.sha, f.vector::vector, f.truncated, now()
      FROM fresh AS f
    ON CONFLICT (model_id, text_sha256) DO NOTHING
)
SELECT id, truncated FROM stored
"""
TRUNCATED_ERROR = "input was truncated by the embedding model"


# The first key of a project's migration lock (the second is the project's
# id): stores take it shared, the switch and a cancel exclusively, so that
# a store reads the project's models either before or after them, never
# during (services.embedders).
EMBEDDER_LOCK = 0x454D42  # "EMB"

# The lock's two keys are int4: ids past 2**31 share a lock with a smaller
# one, which only ever makes two projects wait for each other.
_LOCK_PROJECTS_SHARED_SQL = """
SELECT pg_advisory_xact_lock_shared(%(key)s::int4, (s.project_id %% 2147483648)::int4)
  FROM (SELECT DISTINCT d.project_id FROM documents_chunk AS c JOIN documents_document AS d ON d.id = c.document_id
         WHERE c.id = ANY(%(ids)s) ORDER BY d.project_id) AS s
"""


def project_lock_embedder(*, project_id: int, shared: bool = False) -> None:
    """Take the project's migration lock (EMBEDDER_LOCK) until the end of
    the transaction: shared to store vectors, exclusive to change which
    models the project uses."""
    function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}(%s::int4, (%s::bigint %% 2147483648)::int4)", [EMBEDDER_LOCK, project_id])


def chunks_store_vectors(
    *,
    ids: Sequence[int],
    attempts: Sequence[int],
    vectors: Sequence[str],
    truncated: Sequence[bool],
    models: Sequence[str],
    shas: Sequence[str],
    fill_cache: Sequence[bool],
    next_vectors: Sequence[str | None] | None = None,
    next_models: Sequence[str] | None = None,
    next_truncated: Sequence[bool] | None = None,
    next_fill_cache: Sequence[bool] | None = None,
) -> set[int]:
    """Store each chunk's vector (pgvector text) under its claimed attempts:
    `ready`, or `corrupted` when the model truncated the input; and, for a
    chunk claimed during a migration, its vector of the next model. Which
    vector is kept where is decided by the project's models at the time of
    the store (see _STORE_SQL). Returns the ids stored; a chunk whose claim
    was lost is left as it is."""
    count = len(ids)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_LOCK_PROJECTS_SHARED_SQL, {"key": EMBEDDER_LOCK, "ids": list(ids)})
        cursor.execute(
            _STORE_SQL,
            {
                "ids": list(ids),
                "attempts": list(attempts),
                "vectors": list(vectors),
                "models": list(models),
                "shas": list(shas),
                "truncated": list(truncated),
                "fill_cache": list(fill_cache),
                "next_vectors": list(next_vectors) if next_vectors is not None else [None] * count,
                "next_models": list(next_models) if next_models is not None else [""] * count,
                "next_truncated": list(next_truncated) if next_truncated is not None else [False] * count,
                "next_fill_cache": list(next_fill_cache) if next_fill_cache is not None else [False] * count,
                "truncated_error": TRUNCATED_ERROR,
            },
        )
        return {row[0] for row in cursor.fetchall()}
