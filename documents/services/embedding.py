"""Embedding one chunk: claim it, embed it (or take its cached vector),
store the vector, and report progress. A worker's concurrent tasks share one
claim statement, one store statement and one provider call."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass

from django.conf import settings
from django.utils import timezone

from documents import events, vectorindex
from documents.coalescing import Coalescer
from documents.embeddings import batching, get_batcher
from documents.embeddings.base import EmbeddingError, PermanentEmbeddingError, TransientEmbeddingError
from documents.models import Chunk
from documents.services.dispatch import dispatch_next, window_block
from documents.services.finishing import document_chunk_counts, document_finalize
from documents.services.transitions import chunk_transition_claimed, chunks_claim, chunks_store_vectors
from jobs import services as job_services

logger = logging.getLogger(__name__)

ChunkStatus = Chunk.Status

# Progress is written about this many times per job, not once per chunk, so
# thousands of concurrent chunk tasks do not queue on one job row.
PROGRESS_STEPS = 50


@dataclass(frozen=True)
class ClaimedChunk:
    id: int
    attempts: int
    content: str
    content_sha256: str
    position: int
    document_id: int
    generation: int
    job_id: int | None
    embedder: str
    embedding_model: str
    embedding_dimensions: int
    chunks_in_run: int | None
    # The embedding cache's vector for this exact text, as pgvector text.
    cached_vector: str | None = None
    cached_truncated: bool | None = None
    # The run's priority (its job's), for the next task of its window.
    priority: str = "normal"
    # While the project migrates to another model (services.embedders): that
    # model, and its cached vector for this text. Empty otherwise.
    next_embedder: str = ""
    next_embedding_model: str = ""
    next_embedding_dimensions: int | None = None
    next_cached_vector: str | None = None
    next_cached_truncated: bool | None = None


def _claim_many(chunk_ids: list[int]) -> list[ClaimedChunk | None]:
    claimed = {row[0]: ClaimedChunk(*row) for row in chunks_claim(chunk_ids)}
    # A chunk asked for twice (a redelivered task) is claimed once.
    return [claimed.pop(chunk_id, None) for chunk_id in chunk_ids]


# A worker's concurrent embed tasks claim, and store, in one statement each.
_claims = Coalescer(_claim_many, max_batch=64)


def chunk_claim(*, chunk_id: int) -> ClaimedChunk | None:
    """Take a pending chunk of an indexing document for this worker. Returns
    None when there is nothing to do (already final, claimed elsewhere, or the
    run was cancelled). Runs in autocommit, possibly on another task's
    thread together with its claim."""
    return _claims.submit(chunk_id)


@dataclass(frozen=True)
class _Vector:
    claim: ClaimedChunk
    literal: str
    truncated: bool
    fill_cache: bool
    # The next model's vector during a migration (None when there is none).
    next_literal: str | None = None
    next_truncated: bool = False
    next_fill_cache: bool = False


def _store_many(items: list[_Vector]) -> list[bool]:
    stored = chunks_store_vectors(
        ids=[item.claim.id for item in items],
        attempts=[item.claim.attempts for item in items],
        vectors=[item.literal for item in items],
        truncated=[item.truncated for item in items],
        models=[item.claim.embedding_model for item in items],
        shas=[item.claim.content_sha256 for item in items],
        fill_cache=[item.fill_cache for item in items],
        next_vectors=[item.next_literal for item in items],
        next_models=[item.claim.next_embedding_model if item.next_literal else "" for item in items],
        next_truncated=[item.next_truncated for item in items],
        next_fill_cache=[item.next_fill_cache for item in items],
    )
    return [item.claim.id in stored for item in items]


_stores = Coalescer(_store_many, max_batch=64)


@dataclass(frozen=True)
class NextVector:
    """A chunk's vector of the model its project migrates to."""

    vector: list[float]
    truncated: bool
    fill_cache: bool


def chunk_mark_embedded(
    *,
    claim: ClaimedChunk,
    vector: list[float],
    truncated: bool,
    fill_cache: bool = True,
    next: NextVector | None = None,
) -> bool:
    """Store a chunk's vector (and, during a migration, its next model's).
    Returns False when the claim was lost (the chunk was re-dispatched,
    cancelled or already final), so nothing is counted twice."""
    if len(vector) != claim.embedding_dimensions:
        raise PermanentEmbeddingError(
            f"provider returned a {len(vector)}-dimensional vector; the project expects {claim.embedding_dimensions}"
        )
    extra = {}
    if next is not None:
        extra = {
            "next_literal": vectorindex.vector_literal(next.vector),
            "next_truncated": next.truncated,
            "next_fill_cache": next.fill_cache,
        }
    return _stores.submit(_Vector(claim, vectorindex.vector_literal(vector), truncated, fill_cache, **extra))


def chunk_mark_failed(*, claim: ClaimedChunk, reason: str) -> bool:
    return chunk_transition_claimed(
        chunk_id=claim.id, attempts=claim.attempts, to=ChunkStatus.ERROR, error=reason[:2000]
    )


def chunk_release(*, claim: ClaimedChunk, reason: str) -> bool:
    """Give a chunk back after a transient failure so it can be claimed again."""
    return chunk_transition_claimed(
        chunk_id=claim.id,
        attempts=claim.attempts,
        to=ChunkStatus.PENDING,
        error=reason[:2000],
        dispatched_at=timezone.now(),
    )


@dataclass(frozen=True)
class EmbedOutcome:
    """What happened to one chunk task. `retry_in` is set when the task should
    be retried after that many seconds."""

    status: str
    retry_in: float | None = None


def chunk_embed(*, chunk_id: int, chord: dict | None = None, group_id: str | None = None) -> EmbedOutcome:
    """Claim, embed and store one chunk; then, at the end of a block, send
    the document's next waiting chunks (windowed dispatch, in the same
    `chord` and `group_id` as this task), or, when none waits and none is in
    flight, finalise the document (so a run always ends, whether or not its
    chord completes).

    Transient provider failures give the chunk back (`pending`) and ask for a
    retry until MIRAGE_CHUNK_MAX_ATTEMPTS; permanent ones, and the last
    attempt, store `error` with the provider's reason.

    A task whose chunk it could not claim (paused, already claimed, run
    over) sends nothing: the task holding the claim continues the window,
    and resume starts a paused document's window again.
    """
    # Announced before the claim, so that concurrent tasks of this worker
    # wait for each other and share one provider call.
    with batching.expecting():
        claim = chunk_claim(chunk_id=chunk_id)
        if claim is None:
            return EmbedOutcome(status="skipped")
        outcome = _chunk_embed_claimed(claim)
    if outcome.retry_in is None:
        _continue_window(claim, chord=chord, group_id=group_id)
    return outcome


def _continue_window(claim: ClaimedChunk, *, chord: dict | None, group_id: str | None) -> None:
    """Every block-th finished chunk of a run sends the next block of
    waiting chunks. Once none waits (the run's tail), each finishing task
    finalises the document if no chunk is in flight any more. Without
    Redis's count, every task sends one chunk and, when none waits, checks."""
    counted = events.count_finished(document_id=claim.document_id, generation=claim.generation)
    if counted is None:
        if dispatch_next(document_id=claim.document_id, priority=claim.priority, chord=chord, group_id=group_id):
            return
    else:
        finished, drained = counted
        block = window_block()
        if not drained:
            if finished % block:
                return
            sent = dispatch_next(
                document_id=claim.document_id, priority=claim.priority, chord=chord, group_id=group_id, count=block
            )
            if len(sent) == block:
                return
            events.mark_drained(document_id=claim.document_id, generation=claim.generation)
    if not Chunk.objects.filter(document_id=claim.document_id, status__in=Chunk.ACTIVE_STATUSES).exists():
        document_finalize(document_id=claim.document_id, generation=claim.generation)


def _chunk_embed_claimed(claim: ClaimedChunk) -> EmbedOutcome:
    cached = claim.cached_vector is not None
    try:
        if cached:
            vector, truncated = json.loads(claim.cached_vector), bool(claim.cached_truncated)
        else:
            batcher = get_batcher(claim.embedder)
            if batcher.embedder.model_id != claim.embedding_model:
                raise PermanentEmbeddingError(
                    f"project is pinned to {claim.embedding_model} but the provider serves {batcher.embedder.model_id}"
                )
            result = batcher.embed(claim.content)
            vector, truncated = list(result.vector), result.truncated
        chunk_mark_embedded(
            claim=claim, vector=vector, truncated=truncated, fill_cache=not cached, next=_next_vector(claim)
        )
        status = ChunkStatus.CORRUPTED if truncated else ChunkStatus.READY
    except TransientEmbeddingError as exc:
        if claim.attempts >= settings.MIRAGE_CHUNK_MAX_ATTEMPTS:
            chunk_mark_failed(claim=claim, reason=f"gave up after {claim.attempts} attempts: {exc}")
            status = ChunkStatus.ERROR
        else:
            chunk_release(claim=claim, reason=str(exc))
            backoff = min(
                settings.MIRAGE_RETRY_BACKOFF_MAX_SECONDS,
                settings.MIRAGE_RETRY_BACKOFF_BASE_SECONDS * 2.0 ** (claim.attempts - 1),
            )
            # Jitter spreads retries of many chunks apart; a provider's
            # Retry-After is a floor, never shortened.
            jittered = backoff * (0.5 + random.random() / 2)
            return EmbedOutcome(status="retry", retry_in=max(exc.retry_after or 0.0, jittered))
    except PermanentEmbeddingError as exc:
        chunk_mark_failed(claim=claim, reason=str(exc))
        status = ChunkStatus.ERROR
    _report_progress(claim)
    return EmbedOutcome(status=status)


def _next_vector(claim: ClaimedChunk) -> NextVector | None:
    """During a migration, the chunk's vector of the next model as well (new
    uploads are embedded with both). A failure here never holds the
    document back: the chunk is stored without it, and the migration's own
    batches embed it later (and report a lasting failure on its job)."""
    if not claim.next_embedding_model:
        return None
    if claim.next_cached_vector is not None:
        return NextVector(json.loads(claim.next_cached_vector), bool(claim.next_cached_truncated), fill_cache=False)
    try:
        batcher = get_batcher(claim.next_embedder)
        if batcher.embedder.model_id != claim.next_embedding_model:
            return None
        result = batcher.embed(claim.content)
    except (EmbeddingError, ValueError) as exc:
        logger.info("chunk %s: no vector of the next model %s yet: %s", claim.id, claim.next_embedding_model, exc)
        return None
    if len(result.vector) != claim.next_embedding_dimensions:
        return None
    return NextVector(list(result.vector), result.truncated, fill_cache=True)


def _report_progress(claim: ClaimedChunk) -> None:
    if claim.job_id is None:
        return
    total = claim.chunks_in_run or 0
    step = max(1, total // PROGRESS_STEPS)
    if total and claim.position % step:
        return
    counts = document_chunk_counts(claim.document_id)
    done = sum(counts.get(status, 0) for status in Chunk.FINAL_STATUSES)
    all_chunks = sum(counts.values()) or 1
    # The job's percentage is the document's (chunks in a final state over
    # all chunks), so the two never disagree.
    job_services.job_set_progress(
        job_id=claim.job_id,
        percentage=100 * done // all_chunks,
        message=f"embedding {done}/{all_chunks} chunks",
    )
    events.publish_document_progress(document_id=claim.document_id, generation=claim.generation, counts=counts)
