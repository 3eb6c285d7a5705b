"""Parsing: a run begins, the stored file becomes chunks (streamed, batch by
batch, in one transaction), and their embedding is dispatched."""

from __future__ import annotations

import hashlib
import itertools
import logging
import traceback
import uuid
from collections.abc import Iterable, Iterator
from contextlib import ExitStack

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from common import history
from common.filestore.storage import local_path
from documents import jobkinds
from documents.chunking import ChunkDraft, chunk_sections
from documents.embeddings.base import EmbeddingError
from documents.models import Chunk, Document
from documents.parsers import ParsedDocument, ParseError
from documents.parsers.budgets import BudgetExceeded, ParseBudget, parse_file_within
from documents.services.dispatch import dispatch_chord
from documents.services.finishing import document_finalize
from documents.services.pausing import parse_defer_if_paused
from documents.services.projects import project_embedder
from documents.services.transitions import (
    document_record_repair,
    document_transition,
    lock_job_and_document,
)
from jobs import services as job_services
from jobs.models import Job

logger = logging.getLogger(__name__)

DocStatus = Document.Status
ChunkStatus = Chunk.Status

INSERT_BATCH_SIZE = 1000


def _effective_chunk_tokens(provider) -> int:
    return max(16, min(settings.MIRAGE_CHUNK_SIZE, provider.max_input_tokens))


def run_begin(*, document_id: int, job_id: int) -> Document | None:
    """Move the document to `indexing` for this job and return it with its new
    generation, or None if the job is no longer the document's live job."""
    with transaction.atomic():
        job, document = lock_job_and_document(document_id=document_id, job_id=job_id)
        if document is None or job is None:
            if job is not None:
                job_services.job_fail(job_id=job_id, error_type="not_found", error_message="document was deleted")
            return None
        if job.status != Job.Status.RUNNING or document.current_job_id != job_id:
            logger.info("document %s: job %s is not its live job; nothing to do", document_id, job_id)
            return None
        if job.celery_chord_id:
            # A redelivered parse for a run that already dispatched its chunks.
            logger.info("document %s: job %s already dispatched; nothing to do", document_id, job_id)
            return None
        if parse_defer_if_paused(job=job, document=document):
            return None
        fields = {
            "error_message": "",
            "parsing_started_at": timezone.now(),
            "parsing_finished_at": None,
            "embedding_finished_at": None,
        }
        if document.status == DocStatus.INDEXING:
            # A redelivered task whose earlier attempt died before the end:
            # still indexing, under a new generation.
            fields["generation"] = document.generation + 1
            Document.objects.filter(id=document_id).update(updated_at=timezone.now(), **fields)
            for name, value in fields.items():
                setattr(document, name, value)
            document_record_repair(
                document_id=document_id,
                actor=history.WORKER,
                reason="the run started again: an earlier attempt did not finish",
            )
        else:
            reason = "retry started" if job.kind == jobkinds.RETRY_CHUNKS else f"parsing {document.filename}"
            document = document_transition(
                document_id=document_id,
                from_statuses=DOCUMENT_RUN_SOURCES,
                to=DocStatus.INDEXING,
                actor=history.WORKER,
                reason=reason,
                new_generation=True,
                job_id=job_id,
                **fields,
            )
        job_services.job_set_progress(job_id=job_id, percentage=0, message=f"parsing {document.filename}")
        job_services.job_mark_working(job_id=job_id)
    return document


# Where a run may begin from: a new document, or any finished one.
DOCUMENT_RUN_SOURCES = (DocStatus.PENDING, *Document.FINAL_STATUSES)


class _ParseFailed(Exception):
    """The file cannot become chunks; carries what the document and its job
    record."""

    def __init__(self, error_type: str, message: str, error_traceback: str = "") -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.error_traceback = error_traceback


def document_parse(*, document_id: int, job_id: int) -> None:
    """Parse the stored file into chunks and dispatch their embedding.

    Chunks are stored in batches while the file is read, all in one
    transaction: nothing of the run stays when it fails, crashes or is
    overtaken (cancelled, or a newer run started) before it ends. For a
    reindex, chunks whose text did not change keep their rows and vectors;
    the others are replaced.
    """
    document = run_begin(document_id=document_id, job_id=job_id)
    if document is None:
        return
    try:
        with ExitStack() as local_files:
            parsed, drafts = _parse_lazily(document, local_files=local_files)
            _store_chunks_and_dispatch(document=document, job_id=job_id, drafts=drafts, parsed=parsed)
    except _ParseFailed as failure:
        _document_fail(
            document_id=document_id,
            job_id=job_id,
            generation=document.generation,
            error_type=failure.error_type,
            message=failure.message,
            error_traceback=failure.error_traceback,
        )


def _parse_lazily(document: Document, *, local_files: ExitStack) -> tuple[ParsedDocument, Iterator[ChunkDraft]]:
    """The opened file and its chunk drafts, produced as the file is read.
    Failing to read the file, now or while the drafts are produced, raises
    _ParseFailed. The file's local copy (stored files may live in the
    database or a bucket) lasts as long as `local_files`."""
    try:
        provider = project_embedder(document.project)
        parsed = parse_file_within(
            local_files.enter_context(local_path(document.file)), document.filename, budget=parse_budget()
        )
    except Exception as exc:
        raise _parse_failure(exc, document_id=document.id) from exc
    drafts = chunk_sections(
        parsed.sections,
        max_tokens=_effective_chunk_tokens(provider),
        overlap_tokens=settings.MIRAGE_CHUNK_OVERLAP,
        count_tokens=provider.count_tokens,
    )
    return parsed, _reading_failures_reported(drafts, document_id=document.id)


def parse_budget() -> ParseBudget:
    """The parse budgets from settings (documents.parsers.budgets)."""
    return ParseBudget(
        memory_mb=settings.MIRAGE_PARSE_MEMORY_MB,
        time_limit_seconds=settings.MIRAGE_PARSE_TIME_LIMIT_SECONDS,
        max_pages=settings.MIRAGE_MAX_PAGES,
        max_characters=settings.MIRAGE_MAX_EXTRACTED_CHARACTERS,
    )


def _reading_failures_reported(drafts: Iterator[ChunkDraft], *, document_id: int) -> Iterator[ChunkDraft]:
    # Only the parser's and the chunker's errors pass through here: those of
    # the code storing the drafts (the database's) are not the file's.
    limit = settings.MIRAGE_MAX_CHUNKS_PER_DOCUMENT
    try:
        for count, draft in enumerate(drafts, start=1):
            if limit and count > limit:
                raise BudgetExceeded(
                    f"makes more than {limit} chunks (MIRAGE_MAX_CHUNKS_PER_DOCUMENT is {limit})", budget="chunks"
                )
            yield draft
    except Exception as exc:
        raise _parse_failure(exc, document_id=document_id) from exc


def _parse_failure(exc: Exception, *, document_id: int) -> _ParseFailed:
    """How a failure to read the file is reported: any parser crash is the
    file's error, in words."""
    if isinstance(exc, BudgetExceeded):
        return _ParseFailed(exc.error_type, str(exc))
    if isinstance(exc, (ParseError, EmbeddingError)):
        return _ParseFailed("parse_error", str(exc))
    if isinstance(exc, FileNotFoundError):
        return _ParseFailed("file_missing", "the stored file is missing")
    if isinstance(exc, SoftTimeLimitExceeded):
        return _ParseFailed(
            "parse_error",
            f"parsing did not finish within the time limit ({settings.MIRAGE_PARSE_TIME_LIMIT_SECONDS} s, "
            "MIRAGE_PARSE_TIME_LIMIT_SECONDS)",
        )
    logger.error("document %s: parser crashed", document_id, exc_info=exc)
    return _ParseFailed("parse_error", f"could not read the file: {exc}", "".join(traceback.format_exception(exc)))


# While a run stores its chunks, the previous run's still hold positions 0, 1,
# 2, ... (unique per document, checked row by row): the new ones are written
# this far above them and moved down once the old ones are gone.
NEW_CHUNKS_OFFSET = 1_000_000_000


def _store_chunks_and_dispatch(
    *, document: Document, job_id: int, drafts: Iterator[ChunkDraft], parsed: ParsedDocument
) -> None:
    """Insert the drafts batch by batch as they are produced; then, if the run
    is still the document's live one, replace the previous run's chunks and
    dispatch the embedding of the new ones, else drop everything.

    The job and document rows are locked only once the file is read, so a
    cancel never waits for a long parse (the chunks' foreign key to the
    document is checked at commit, not at insert)."""
    with transaction.atomic():
        replacing = Chunk.objects.filter(document_id=document.id).exists()
        try:
            chunk_ids = _insert_drafts(
                document_id=document.id, drafts=drafts, position_offset=NEW_CHUNKS_OFFSET if replacing else 0
            )
        except SoftTimeLimitExceeded as exc:
            # The time limit can strike while a batch is being stored, outside
            # the drafts' own error handling.
            raise _parse_failure(exc, document_id=document.id) from exc
        if not chunk_ids:
            raise _ParseFailed("no_content", "no extractable text: the file has nothing to index")
        _, locked = lock_job_and_document(document_id=document.id, job_id=job_id)
        if locked is None or locked.generation != document.generation:
            logger.info("document %s: generation moved during parsing; results dropped", document.id)
            transaction.set_rollback(True)
            return
        replaced = (
            _replace_previous_chunks(document_id=document.id, model_id=locked.project.embedding_model)
            if replacing
            else set()
        )
        _finish_parsing(document=locked, job_id=job_id, chunk_ids=chunk_ids, replaced=replaced, parsed=parsed)


def _insert_drafts(*, document_id: int, drafts: Iterable[ChunkDraft], position_offset: int) -> list[int]:
    """Store the drafts as `pending` chunks, INSERT_BATCH_SIZE at a time as
    they are produced, at their position plus `position_offset`; returns the
    chunks' ids in order. Only one batch of drafts is held at a time."""
    chunk_ids: list[int] = []
    for batch in _batches(drafts, INSERT_BATCH_SIZE):
        chunks = Chunk.objects.bulk_create(
            [
                Chunk(
                    document_id=document_id,
                    position=position_offset + draft.position,
                    content=draft.content,
                    content_sha256=hashlib.sha256(draft.content.encode("utf-8")).hexdigest(),
                    token_count=draft.token_count,
                    structure=draft.structure,
                    start_offset=draft.start,
                    end_offset=draft.end,
                    status=ChunkStatus.PENDING,
                    # Waiting for its task; _finish_parsing marks the first
                    # window sent, dispatch_next the others a block at a time.
                    dispatched_at=None,
                )
                for draft in batch
            ]
        )
        chunk_ids.extend(chunk.id for chunk in chunks)
    return chunk_ids


def _batches(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


# Pairs each chunk of the previous run that can be kept (ready, embedded by
# the project's model) with the first new chunk of the same text, deletes
# that new chunk and gives its position and structure to the kept one. The
# UPDATE reads each pair from the DELETE's output, so the new chunk is gone
# before the kept one takes its position.
_KEEP_UNCHANGED_SQL = """
WITH reusable AS (
    SELECT DISTINCT ON (content_sha256) id, content_sha256
      FROM documents_chunk
     WHERE document_id = %(document_id)s AND position < %(offset)s
       AND status = 'ready' AND embedding_model = %(model_id)s
     ORDER BY content_sha256, position
), first_new AS (
    SELECT DISTINCT ON (content_sha256) id, content_sha256
      FROM documents_chunk
     WHERE document_id = %(document_id)s AND position >= %(offset)s
     ORDER BY content_sha256, position
), replaced AS (
    DELETE FROM documents_chunk AS new
     USING reusable JOIN first_new USING (content_sha256)
     WHERE new.id = first_new.id
    RETURNING new.id AS new_id, reusable.id AS kept_id, new.position, new.structure
)
UPDATE documents_chunk AS kept
   SET position = replaced.position, structure = replaced.structure
  FROM replaced
 WHERE kept.id = replaced.kept_id
RETURNING replaced.new_id
"""


def _replace_previous_chunks(*, document_id: int, model_id: str) -> set[int]:
    """Keep the previous run's unchanged chunks in place of the new chunks
    with the same text, delete the rest of the previous run and move the
    chunks down to positions 0, 1, 2, .... Returns the ids of the new chunks
    that kept ones replaced."""
    with connection.cursor() as cursor:
        cursor.execute(
            _KEEP_UNCHANGED_SQL, {"document_id": document_id, "offset": NEW_CHUNKS_OFFSET, "model_id": model_id}
        )
        replaced = {new_id for (new_id,) in cursor.fetchall()}
    Chunk.objects.filter(document_id=document_id, position__lt=NEW_CHUNKS_OFFSET).delete()
    Chunk.objects.filter(document_id=document_id).update(position=F("position") - NEW_CHUNKS_OFFSET)
    return replaced


def _finish_parsing(
    *, document: Document, job_id: int, chunk_ids: list[int], replaced: set[int], parsed: ParsedDocument
) -> None:
    """Record the parse on the (locked) document and its job, and dispatch the
    embedding of the chunks that need it once the transaction commits."""
    document.parsing_finished_at = timezone.now()
    document.metadata = {
        **document.metadata,
        **({"title": parsed.title} if parsed.title else {}),
        **(parsed.metadata or {}),
    }
    document.save(update_fields=["parsing_finished_at", "metadata", "updated_at"])
    to_embed = [chunk_id for chunk_id in chunk_ids if chunk_id not in replaced]
    # Unchanged chunks are already final: the document's progress counts them.
    job_services.job_set_progress(
        job_id=job_id,
        percentage=100 * len(replaced) // len(chunk_ids),
        message=f"embedding 0/{len(to_embed)} chunks ({len(replaced)} unchanged)",
        chunks_created=len(chunk_ids),
    )
    # What the ETA measures the run's speed from: chunks already final when
    # its embedding began.
    job_services.job_update_metadata(job_id=job_id, chunks_final_at_start=len(replaced))
    chord_id = str(uuid.uuid4())
    job_services.job_set_task_ids(job_id=job_id, chord_id=chord_id)
    document_id, generation = document.id, document.generation
    priority = Job.objects.filter(id=job_id).values_list("priority", flat=True).first() or Job.Priority.NORMAL
    if to_embed:
        # The first window is marked sent in the parse's own transaction, so
        # no reconciler ever sees the run with every chunk waiting and none
        # in flight (a stalled window) before dispatch_chord has sent it.
        Chunk.objects.filter(id__in=to_embed[: settings.MIRAGE_DISPATCH_WINDOW]).update(dispatched_at=timezone.now())
        transaction.on_commit(
            lambda: dispatch_chord(
                chunk_ids=to_embed, document_id=document_id, generation=generation, chord_id=chord_id, priority=priority
            )
        )
    else:
        # Nothing to embed (an unchanged reindex): finish now.
        transaction.on_commit(lambda: document_finalize(document_id=document_id, generation=generation))


def _document_fail(
    *, document_id: int, job_id: int, generation: int, error_type: str, message: str, error_traceback: str = ""
) -> None:
    with transaction.atomic():
        lock_job_and_document(document_id=document_id, job_id=job_id)
        failed = document_transition(
            document_id=document_id,
            from_statuses=DocStatus.INDEXING,
            to=DocStatus.ERROR,
            actor=history.WORKER,
            reason=message,
            generation=generation,
            job_id=job_id,
            error_message=message,
        )
        if failed is not None:
            job_services.job_fail(
                job_id=job_id, error_type=error_type, error_message=message, error_traceback=error_traceback
            )
