"""Every change to projects, documents and chunks, one function each.

Where a document's status changes: here, and only here. Each write is a
conditional UPDATE (or runs under a row lock) guarded by the document's
`generation` or the chunk's `attempts`, so a late, duplicate or cancelled
task can never overwrite newer state.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
import re
import tempfile
import traceback
import unicodedata
import uuid
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO

from celery import current_app, signature
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F
from django.utils import timezone

from documents import events, vectorindex
from documents.chunking import ChunkDraft, chunk_sections
from documents.coalescing import Coalescer
from documents.embeddings import batching, get_batcher, get_embedder
from documents.embeddings.base import EmbeddingError, PermanentEmbeddingError, TransientEmbeddingError
from documents.models import Chunk, Document, Project
from documents.parsers import ParsedDocument, ParseError, detect_type, parse_file
from documents.status import derive_document_status
from filestore.storage import local_path
from jobs import services as job_services
from jobs.models import Job

logger = logging.getLogger(__name__)

DocStatus = Document.Status
ChunkStatus = Chunk.Status

INSERT_BATCH_SIZE = 1000
DETECTION_HEAD_BYTES = 64 * 1024
# Progress is written about this many times per job, not once per chunk, so
# thousands of concurrent chunk tasks do not queue on one job row.
PROGRESS_STEPS = 50


class UploadRejected(Exception):
    """A file that cannot become a document; the message says why."""


class UploadTooLarge(UploadRejected):
    pass


class EmptyUpload(UploadRejected):
    pass


class DocumentBusy(Exception):
    """The document has work in flight; the message says which job."""


# --- Projects -------------------------------------------------------------------


@transaction.atomic
def project_create(*, name: str, embedder: str | None = None, members=()) -> Project:
    """Create a project and pin its embedding model (from `embedder` or
    MIRAGE_EMBEDDER)."""
    spec = embedder or settings.MIRAGE_EMBEDDER
    provider = get_embedder(spec)
    project = Project.objects.create(
        name=name,
        embedder=spec,
        embedding_model=provider.model_id,
        embedding_dimensions=provider.dimensions,
    )
    if members:
        project.members.add(*members)
    transaction.on_commit(
        lambda: vectorindex.ensure_index(model_id=provider.model_id, dimensions=provider.dimensions)
    )
    return project


def project_embedder(project: Project):
    provider = get_embedder(project.embedder)
    if provider.model_id != project.embedding_model or provider.dimensions != project.embedding_dimensions:
        raise PermanentEmbeddingError(
            f"project {project.name!r} is pinned to {project.embedding_model} "
            f"({project.embedding_dimensions} dims) but the configured provider serves "
            f"{provider.model_id} ({provider.dimensions} dims)"
        )
    return provider


# --- Submitting files -------------------------------------------------------------


_UNSAFE_FILENAME_CHARS = re.compile(r"[^\w.\- ()+,@]", re.UNICODE)


def sanitize_filename(name: str) -> str:
    """A safe base name: no directories, no control characters, no leading dots."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").split("/")[-1]
    name = _UNSAFE_FILENAME_CHARS.sub("_", name).strip(" .")
    if not name:
        name = "document"
    if len(name) > 200:
        stem, dot, ext = name.rpartition(".")
        name = (stem[: 200 - len(ext) - 1] + dot + ext) if dot and len(ext) <= 16 else name[:200]
    return name


@dataclass(frozen=True)
class Submission:
    document: Document
    job: Job | None
    created: bool


def _spool(source: BinaryIO, max_bytes: int) -> tuple[tempfile.NamedTemporaryFile, str, int, bytes]:
    digest = hashlib.sha256()
    size = 0
    head = b""
    spool = tempfile.NamedTemporaryFile(prefix="mirage-upload-", delete=True)
    try:
        while block := source.read(1024 * 1024):
            size += len(block)
            if size > max_bytes:
                raise UploadTooLarge(
                    f"file is larger than the {settings.MIRAGE_MAX_UPLOAD_MB} MB limit (MIRAGE_MAX_UPLOAD_MB)"
                )
            if len(head) < DETECTION_HEAD_BYTES:
                head += block[: DETECTION_HEAD_BYTES - len(head)]
            digest.update(block)
            spool.write(block)
        spool.flush()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return spool, digest.hexdigest(), size, head


def document_submit(
    *,
    project: Project,
    source: BinaryIO,
    filename: str,
    metadata: dict | None = None,
    parent_job: Job | None = None,
) -> Submission:
    """Store a file and queue its indexing.

    Returns the existing document (created=False, nothing started) when the
    project already holds the same bytes. Raises UploadTooLarge, EmptyUpload
    or parsers.UnsupportedFileType (with `detected_type`) for files that
    cannot become documents.
    """
    filename = sanitize_filename(filename)
    spool, sha256, size, head = _spool(source, settings.MIRAGE_MAX_UPLOAD_MB * 1024 * 1024)
    with spool:
        if size == 0:
            raise EmptyUpload("file is empty")
        existing = Document.objects.filter(project=project, content_sha256=sha256).first()
        if existing is not None:
            return Submission(document=existing, job=existing.current_job, created=False)
        file_type = detect_type(head, filename)
        document = Document(
            project=project,
            filename=filename,
            file_type=file_type,
            size_bytes=size,
            content_sha256=sha256,
            metadata=metadata or {},
        )
        document.file.save(filename, File(spool, name=filename), save=False)
    try:
        with transaction.atomic():
            document.save()
            job = job_services.job_create(
                kind=Job.Kind.INDEX_DOCUMENT,
                project_id=project.id,
                subject_id=document.id,
                parent=parent_job,
                metadata={"filename": filename},
            )
            Document.objects.filter(id=document.id).update(current_job=job)
            document.current_job = job
            transaction.on_commit(lambda: events.publish_document(document))
    except IntegrityError:
        # The same bytes arrived concurrently and the other upload won.
        default_storage.delete(document.file.name)
        existing = Document.objects.get(project=project, content_sha256=sha256)
        return Submission(document=existing, job=existing.current_job, created=False)
    return Submission(document=document, job=job, created=True)


# --- Starting runs ------------------------------------------------------------------


def lock_job_and_document(*, document_id: int, job_id: int | None = None) -> tuple[Job | None, Document | None]:
    """Lock a document's job row, then the document row: the one order every
    writer takes them in (job_cancel holds the job when it reaches the
    document), so two writers can never deadlock. Without `job_id`, the
    document's current job is locked."""
    if job_id is None:
        job_id = Document.objects.filter(id=document_id).values_list("current_job_id", flat=True).first()
    job = Job.objects.select_for_update().filter(id=job_id).first() if job_id else None
    document = (
        Document.objects.select_for_update(of=("self",)).select_related("project").filter(id=document_id).first()
    )
    return job, document


def _document_job_active(document: Document) -> Job | None:
    if document.current_job_id is None:
        return None
    job = Job.objects.filter(id=document.current_job_id, status__in=Job.ACTIVE_STATUSES).first()
    return job


@transaction.atomic
def document_reindex(*, document: Document) -> Job:
    """Queue a re-parse of the stored file. Unchanged chunks keep their vectors."""
    return _document_start_job(document=document, kind=Job.Kind.REINDEX_DOCUMENT)


@transaction.atomic
def document_retry_failed(*, document: Document, include_corrupted: bool = False) -> Job:
    """Queue a job that re-embeds only the chunks in `error` (and optionally
    `corrupted`); `ready` chunks are not touched."""
    return _document_start_job(
        document=document,
        kind=Job.Kind.RETRY_CHUNKS,
        metadata={"include_corrupted": include_corrupted},
    )


def _document_start_job(*, document: Document, kind: str, metadata: dict | None = None) -> Job:
    document = Document.objects.select_for_update().get(id=document.id)
    active = _document_job_active(document)
    if active is not None:
        raise DocumentBusy(f"document {document.id} already has job {active.id} ({active.kind}, {active.status})")
    job = job_services.job_create(
        kind=kind,
        project_id=document.project_id,
        subject_id=document.id,
        metadata={"filename": document.filename, **(metadata or {})},
    )
    document.current_job = job
    document.save(update_fields=["current_job", "updated_at"])
    return job


def document_delete(*, document: Document) -> None:
    """Delete a document, its chunks and its file; active work is cancelled first."""
    with transaction.atomic():
        _, document = lock_job_and_document(document_id=document.id)
        active = _document_job_active(document)
        if active is not None:
            job_services.job_cancel(job_id=active.id)
        file_name = document.file.name
        document.delete()
        transaction.on_commit(lambda: default_storage.delete(file_name))


def document_cancel_work(job: Job) -> None:
    """Stop a document's run (cancel hook of the document job kinds; runs in
    the cancelling transaction). Bumping the generation makes every task of
    the run a no-op from now on; chunks claimed by a worker go back to
    `pending` so that their late results are refused."""
    document = Document.objects.select_for_update().filter(id=job.subject_id).first()
    if document is None or document.current_job_id != job.id:
        return
    active = Chunk.objects.filter(document=document, status__in=Chunk.ACTIVE_STATUSES)
    if job.status == Job.Status.CANCELLED:
        # Cancelled work may be resumed by a retry or reindex: chunks go back
        # to `pending`, and a claimed chunk's late result is refused.
        active.filter(status=ChunkStatus.PROCESSING).update(
            status=ChunkStatus.PENDING, lease_expires_at=None, updated_at=timezone.now()
        )
        final_status, message = DocStatus.CANCELLED, ""
    else:
        # The job failed (timed out): what was embedded stays usable, the rest
        # is an error, and the document says which it is.
        message = job.error_message or "the job failed"
        active.update(status=ChunkStatus.ERROR, error=f"not embedded: {message}", lease_expires_at=None,
                      updated_at=timezone.now())
        counts = document_chunk_counts(document.id)
        final_status = derive_document_status(counts) if counts else DocStatus.ERROR
    Document.objects.filter(id=document.id).update(
        status=final_status,
        error_message=message,
        generation=document.generation + 1,
        updated_at=timezone.now(),
    )
    document.refresh_from_db()
    transaction.on_commit(lambda: events.publish_document(document))


# --- Parsing ----------------------------------------------------------------------


def _effective_chunk_tokens(provider) -> int:
    return max(16, min(settings.MIRAGE_CHUNK_SIZE, provider.max_input_tokens))


def _begin_run(*, document_id: int, job_id: int) -> Document | None:
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
        document.generation += 1
        document.status = DocStatus.INDEXING
        document.error_message = ""
        document.parsing_started_at = timezone.now()
        document.parsing_finished_at = None
        document.embedding_finished_at = None
        document.save(
            update_fields=[
                "generation", "status", "error_message", "parsing_started_at",
                "parsing_finished_at", "embedding_finished_at", "updated_at",
            ]
        )
        job_services.job_set_progress(job_id=job_id, percentage=1, message=f"parsing {document.filename}")
        transaction.on_commit(lambda: events.publish_document(document))
    return document


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
    document = _begin_run(document_id=document_id, job_id=job_id)
    if document is None:
        return
    try:
        with ExitStack() as local_files:
            parsed, drafts = _parse_lazily(document, local_files=local_files)
            _store_chunks_and_dispatch(document=document, job_id=job_id, drafts=drafts, parsed=parsed)
    except _ParseFailed as failure:
        _document_fail(document_id=document_id, job_id=job_id, generation=document.generation,
                       error_type=failure.error_type, message=failure.message,
                       error_traceback=failure.error_traceback)


def _parse_lazily(document: Document, *, local_files: ExitStack) -> tuple[ParsedDocument, Iterator[ChunkDraft]]:
    """The opened file and its chunk drafts, produced as the file is read.
    Failing to read the file, now or while the drafts are produced, raises
    _ParseFailed. The file's local copy lives as long as `local_files`."""
    try:
        provider = project_embedder(document.project)
        parsed = parse_file(local_files.enter_context(local_path(document.file)), document.filename)
    except Exception as exc:
        raise _parse_failure(exc, document_id=document.id) from exc
    drafts = chunk_sections(
        parsed.sections,
        max_tokens=_effective_chunk_tokens(provider),
        overlap_tokens=settings.MIRAGE_CHUNK_OVERLAP,
        count_tokens=provider.count_tokens,
    )
    return parsed, _reading_failures_reported(drafts, document_id=document.id)


def _reading_failures_reported(drafts: Iterator[ChunkDraft], *, document_id: int) -> Iterator[ChunkDraft]:
    # Only the parser's and the chunker's errors pass through here: those of
    # the code storing the drafts (the database's) are not the file's.
    try:
        yield from drafts
    except Exception as exc:
        raise _parse_failure(exc, document_id=document_id) from exc


def _parse_failure(exc: Exception, *, document_id: int) -> _ParseFailed:
    """How a failure to read the file is reported: any parser crash is the
    file's error, in words."""
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
        now = timezone.now()
        chunks = Chunk.objects.bulk_create(
            [
                Chunk(
                    document_id=document_id,
                    position=position_offset + draft.position,
                    content=draft.content,
                    content_sha256=hashlib.sha256(draft.content.encode("utf-8")).hexdigest(),
                    token_count=draft.token_count,
                    structure=draft.structure,
                    status=ChunkStatus.PENDING,
                    dispatched_at=now,
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
        cursor.execute(_KEEP_UNCHANGED_SQL, {"document_id": document_id, "offset": NEW_CHUNKS_OFFSET,
                                             "model_id": model_id})
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
    document.metadata = {**document.metadata, **({"title": parsed.title} if parsed.title else {}),
                         **(parsed.metadata or {})}
    document.save(update_fields=["parsing_finished_at", "metadata", "updated_at"])
    to_embed = [chunk_id for chunk_id in chunk_ids if chunk_id not in replaced]
    job_services.job_set_progress(
        job_id=job_id,
        percentage=10,
        message=f"embedding 0/{len(to_embed)} chunks ({len(replaced)} unchanged)",
        chunks_created=len(chunk_ids),
    )
    chord_id = str(uuid.uuid4())
    job_services.job_set_task_ids(job_id=job_id, chord_id=chord_id)
    document_id, generation = document.id, document.generation
    if to_embed:
        transaction.on_commit(
            lambda: dispatch_chord(chunk_ids=to_embed, document_id=document_id, generation=generation,
                                   chord_id=chord_id)
        )
    else:
        # Nothing to embed (an unchanged reindex): finish now.
        transaction.on_commit(lambda: document_finalize(document_id=document_id, generation=generation))


def dispatch_chord(*, chunk_ids: list[int], document_id: int, generation: int, chord_id: str) -> None:
    """One embed_chunk task per chunk; finalize_document (task id `chord_id`)
    runs when all have returned.

    A Celery chord, sent as celery.chord sends one to the Redis result
    backend (every task carries the callback, its group and its index; the
    backend counts returns up to the chord size), but task by task:
    celery.chord holds a signature, a result and a result subscription per
    task in this process, which the ingest worker never frees."""
    group_id = str(uuid.uuid4())
    callback = signature("documents.finalize_document", args=[document_id, generation], immutable=True)
    callback.set(task_id=chord_id)
    current_app.backend.set_chord_size(group_id, len(chunk_ids))
    with current_app.producer_or_acquire() as producer:
        for index, chunk_id in enumerate(chunk_ids):
            signature("documents.embed_chunk", args=[chunk_id]).apply_async(
                producer=producer, add_to_parent=False, chord=callback, group_id=group_id, group_index=index
            )
    events.mark_dispatched(document_id=document_id, generation=generation)


def dispatch_chunks(chunk_ids: list[int]) -> None:
    """Send embed_chunk tasks outside any chord (reconciler re-dispatch), on
    one producer."""
    with current_app.producer_or_acquire() as producer:
        for chunk_id in chunk_ids:
            signature("documents.embed_chunk", args=[chunk_id]).apply_async(producer=producer)


def _document_fail(
    *, document_id: int, job_id: int, generation: int, error_type: str, message: str, error_traceback: str = ""
) -> None:
    with transaction.atomic():
        lock_job_and_document(document_id=document_id, job_id=job_id)
        updated = Document.objects.filter(id=document_id, generation=generation).update(
            status=DocStatus.ERROR, error_message=message, updated_at=timezone.now()
        )
        if not updated:
            return
        job_services.job_fail(job_id=job_id, error_type=error_type, error_message=message,
                              error_traceback=error_traceback)
        document = Document.objects.get(id=document_id)
        transaction.on_commit(lambda: events.publish_document(document))


# --- Retry failed chunks ------------------------------------------------------------


def document_retry_chunks(*, document_id: int, job_id: int) -> None:
    """Re-queue the document's failed chunks (the retry job's work)."""
    document = _begin_run(document_id=document_id, job_id=job_id)
    if document is None:
        return
    job = Job.objects.get(id=job_id)
    # Chunks a cancelled run left `pending` go along: they never ran.
    statuses = [ChunkStatus.ERROR, ChunkStatus.PENDING]
    if job.metadata.get("include_corrupted"):
        statuses.append(ChunkStatus.CORRUPTED)
    chord_id = str(uuid.uuid4())
    with transaction.atomic():
        now = timezone.now()
        chunk_ids = list(
            Chunk.objects.filter(document_id=document_id, status__in=statuses).values_list("id", flat=True)
        )
        Chunk.objects.filter(id__in=chunk_ids).update(
            status=ChunkStatus.PENDING, error="", attempts=0, lease_expires_at=None,
            dispatched_at=now, updated_at=now,
        )
        Document.objects.filter(id=document_id).update(parsing_finished_at=now)
        job_services.job_set_progress(job_id=job_id, percentage=10,
                                      message=f"retrying 0/{len(chunk_ids)} failed chunks",
                                      chunks_created=len(chunk_ids))
        job_services.job_set_task_ids(job_id=job_id, chord_id=chord_id)
        generation = document.generation
        if chunk_ids:
            transaction.on_commit(lambda: dispatch_chord(chunk_ids=chunk_ids, document_id=document_id,
                                                         generation=generation, chord_id=chord_id))
        else:
            transaction.on_commit(lambda: document_finalize(document_id=document_id, generation=generation))


# --- Embedding one chunk --------------------------------------------------------------


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


# One statement claims chunks and brings along everything their embedding
# needs: the project's model, the run's size and any cached vector.
_CLAIM_SQL = """
UPDATE documents_chunk AS c
   SET status = 'processing', attempts = c.attempts + 1, claimed_at = now(),
       lease_expires_at = now() + make_interval(secs => %s), updated_at = now()
  FROM documents_document AS d JOIN documents_project AS p ON p.id = d.project_id
 WHERE c.id = ANY(%s) AND c.status = 'pending' AND d.id = c.document_id AND d.status = 'indexing'
RETURNING c.id, c.attempts, c.content, c.content_sha256, c.position, c.document_id, d.generation,
          d.current_job_id, p.embedder, p.embedding_model, p.embedding_dimensions,
          (SELECT j.chunks_created FROM jobs_job j WHERE j.id = d.current_job_id),
          (SELECT e.embedding::text FROM documents_embeddingcacheentry e
            WHERE e.model_id = p.embedding_model AND e.text_sha256 = c.content_sha256),
          (SELECT e.truncated FROM documents_embeddingcacheentry e
            WHERE e.model_id = p.embedding_model AND e.text_sha256 = c.content_sha256)
"""


def _claim_many(chunk_ids: list[int]) -> list[ClaimedChunk | None]:
    with connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [settings.MIRAGE_CHUNK_LEASE_SECONDS, list(set(chunk_ids))])
        claimed = {row[0]: ClaimedChunk(*row) for row in cursor.fetchall()}
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


def _chunk_write(claim: ClaimedChunk, **fields) -> bool:
    fields.setdefault("updated_at", timezone.now())
    fields.setdefault("lease_expires_at", None)
    return (
        Chunk.objects.filter(id=claim.id, status=ChunkStatus.PROCESSING, attempts=claim.attempts).update(**fields)
        == 1
    )


# Stores vectors under their claimed attempts and, in the same statement,
# fills the embedding cache with those that came from the provider.
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


@dataclass(frozen=True)
class _Vector:
    claim: ClaimedChunk
    literal: str
    truncated: bool
    fill_cache: bool


def _store_many(items: list[_Vector]) -> list[bool]:
    with connection.cursor() as cursor:
        cursor.execute(
            _STORE_SQL,
            {
                "ids": [item.claim.id for item in items],
                "attempts": [item.claim.attempts for item in items],
                "statuses": [ChunkStatus.CORRUPTED if item.truncated else ChunkStatus.READY for item in items],
                "vectors": [item.literal for item in items],
                "errors": ["input was truncated by the embedding model" if item.truncated else "" for item in items],
                "models": [item.claim.embedding_model for item in items],
                "shas": [item.claim.content_sha256 for item in items],
                "truncated": [item.truncated for item in items],
                "fill_cache": [item.fill_cache for item in items],
            },
        )
        stored = {row[0] for row in cursor.fetchall()}
    return [item.claim.id in stored for item in items]


_stores = Coalescer(_store_many, max_batch=64)


def chunk_mark_embedded(
    *, claim: ClaimedChunk, vector: list[float], truncated: bool, fill_cache: bool = True
) -> bool:
    """Store a chunk's vector. Returns False when the claim was lost (the chunk
    was re-dispatched, cancelled or already final), so nothing is counted twice."""
    if len(vector) != claim.embedding_dimensions:
        raise PermanentEmbeddingError(
            f"provider returned a {len(vector)}-dimensional vector; the project expects "
            f"{claim.embedding_dimensions}"
        )
    return _stores.submit(_Vector(claim, vectorindex.vector_literal(vector), truncated, fill_cache))


def chunk_mark_failed(*, claim: ClaimedChunk, reason: str) -> bool:
    return _chunk_write(claim, status=ChunkStatus.ERROR, error=reason[:2000])


def chunk_release(*, claim: ClaimedChunk, reason: str) -> bool:
    """Give a chunk back after a transient failure so it can be claimed again."""
    return _chunk_write(claim, status=ChunkStatus.PENDING, error=reason[:2000], dispatched_at=timezone.now())


@dataclass(frozen=True)
class EmbedOutcome:
    """What happened to one chunk task. `retry_in` is set when the task should
    be retried after that many seconds."""

    status: str
    retry_in: float | None = None


def chunk_embed(*, chunk_id: int) -> EmbedOutcome:
    """Claim, embed and store one chunk.

    Transient provider failures give the chunk back (`pending`) and ask for a
    retry until MIRAGE_CHUNK_MAX_ATTEMPTS; permanent ones, and the last
    attempt, store `error` with the provider's reason.
    """
    # Announced before the claim, so that concurrent tasks of this worker
    # wait for each other and share one provider call.
    with batching.expecting():
        claim = chunk_claim(chunk_id=chunk_id)
        if claim is None:
            return EmbedOutcome(status="skipped")
        return _chunk_embed_claimed(claim)


def _chunk_embed_claimed(claim: ClaimedChunk) -> EmbedOutcome:
    cached = claim.cached_vector is not None
    try:
        if cached:
            vector, truncated = json.loads(claim.cached_vector), bool(claim.cached_truncated)
        else:
            batcher = get_batcher(claim.embedder)
            if batcher.embedder.model_id != claim.embedding_model:
                raise PermanentEmbeddingError(
                    f"project is pinned to {claim.embedding_model} but the provider serves "
                    f"{batcher.embedder.model_id}"
                )
            result = batcher.embed(claim.content)
            vector, truncated = list(result.vector), result.truncated
        chunk_mark_embedded(claim=claim, vector=vector, truncated=truncated, fill_cache=not cached)
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
    job_services.job_set_progress(
        job_id=claim.job_id,
        percentage=10 + int(89 * done / all_chunks),
        message=f"embedding {done}/{all_chunks} chunks",
    )
    events.publish_document_id(claim.document_id)


# --- Finishing a run -----------------------------------------------------------------


def document_chunk_counts(document_id: int) -> dict[str, int]:
    rows = Chunk.objects.filter(document_id=document_id).values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def document_finalize(*, document_id: int, generation: int | None = None) -> str | None:
    """Set the document's final status from its chunks, and end its job
    truthfully: `completed` only when the document is `ready` or `partial`.

    Does nothing while chunks are still in flight, for a stale generation, or
    for a document that is not `indexing`. Returns the status it set.
    """
    with transaction.atomic():
        job, document = lock_job_and_document(document_id=document_id)
        if document is None or document.status != DocStatus.INDEXING:
            return None
        if document.current_job_id != (job.id if job else None):
            return None  # a new run started between the two reads; it finalizes itself
        if generation is not None and document.generation != generation:
            return None
        counts = document_chunk_counts(document_id)
        status = derive_document_status(counts)
        if status == DocStatus.INDEXING:
            return None
        now = timezone.now()
        failed = counts.get(ChunkStatus.ERROR, 0)
        corrupted = counts.get(ChunkStatus.CORRUPTED, 0)
        total = sum(counts.values())
        document.status = status
        document.embedding_finished_at = now
        document.indexed_at = now if status in (DocStatus.READY, DocStatus.PARTIAL) else document.indexed_at
        document.error_message = _status_reason(status, counts, document_id)
        document.save(update_fields=["status", "embedding_finished_at", "indexed_at", "error_message", "updated_at"])
        if document.current_job_id:
            counters = {"chunks_failed": failed, "files_indexed": 1 if status != DocStatus.ERROR else 0}
            if status in (DocStatus.READY, DocStatus.PARTIAL):
                usable = total - failed
                job_services.job_complete(
                    job_id=document.current_job_id,
                    message=f"{usable}/{total} chunks embedded"
                    + (f", {failed} failed" if failed else "")
                    + (f", {corrupted} truncated" if corrupted else ""),
                    **counters,
                )
            else:
                job_services.job_fail(
                    job_id=document.current_job_id,
                    error_type="embedding_failed",
                    error_message=document.error_message,
                    **counters,
                )
        transaction.on_commit(lambda: events.publish_document(document))
    logger.info("document %s finalized as %s (%s)", document_id, status, counts)
    return status


def _status_reason(status: str, counts: dict[str, int], document_id: int) -> str:
    if status == DocStatus.READY:
        return ""
    total = sum(counts.values())
    failed = counts.get(ChunkStatus.ERROR, 0)
    if total == 0:
        return "no chunks: the file has nothing to index"
    first_error = (
        Chunk.objects.filter(document_id=document_id, status=ChunkStatus.ERROR)
        .order_by("position")
        .values_list("error", flat=True)
        .first()
    )
    if status == DocStatus.ERROR:
        return f"no chunk could be embedded ({failed}/{total} failed): {first_error}"
    parts = []
    if failed:
        parts.append(f"{failed}/{total} chunks failed (first error: {first_error})")
    if counts.get(ChunkStatus.CORRUPTED, 0):
        parts.append(f"{counts[ChunkStatus.CORRUPTED]}/{total} chunks were truncated by the model")
    return "; ".join(parts)


# --- Repairs (used by the reconcilers and mirage_check --repair) -------------------------


def chunks_redispatch_stuck(*, limit: int = 5000) -> dict[str, int]:
    """Send again the tasks of chunks whose worker died (`processing` past the
    lease) or whose message was lost (`pending`, last sent over a lease ago,
    or sent before the broker lost its data). A chunk out of attempts ends
    `error` with the reason."""
    now = timezone.now()
    lease = timedelta(seconds=settings.MIRAGE_CHUNK_LEASE_SECONDS)
    max_attempts = settings.MIRAGE_CHUNK_MAX_ATTEMPTS
    gave_up = 0
    with transaction.atomic():
        expired = list(
            Chunk.objects.select_for_update(skip_locked=True)
            .filter(status=ChunkStatus.PROCESSING, lease_expires_at__lt=now, document__status=DocStatus.INDEXING)
            .values_list("id", "attempts")[:limit]
        )
        exhausted = [chunk_id for chunk_id, attempts in expired if attempts >= max_attempts]
        retry = [chunk_id for chunk_id, attempts in expired if attempts < max_attempts]
        if exhausted:
            gave_up = Chunk.objects.filter(id__in=exhausted).update(
                status=ChunkStatus.ERROR,
                error=f"worker lost the chunk {max_attempts} times (lease of "
                f"{settings.MIRAGE_CHUNK_LEASE_SECONDS} s expired each time)",
                lease_expires_at=None,
                updated_at=now,
            )
        Chunk.objects.filter(id__in=retry).update(
            status=ChunkStatus.PENDING, lease_expires_at=None, dispatched_at=now, updated_at=now
        )
        lost_documents = events.documents_missing_dispatch_marker(
            Document.objects.filter(status=DocStatus.INDEXING, parsing_finished_at__isnull=False)
            .values_list("id", "generation")
        )
        stale = Chunk.objects.select_for_update(skip_locked=True).filter(
            status=ChunkStatus.PENDING, document__status=DocStatus.INDEXING
        )
        # A run's chunks are sent when its parse commits (parsing_finished_at),
        # which for a long file is well after they were inserted.
        sent_over_a_lease_ago = stale.filter(
            dispatched_at__lt=now - lease, document__parsing_finished_at__lt=now - lease
        )
        pending = list(
            sent_over_a_lease_ago.values_list("id", flat=True)[:limit]
        ) + list(stale.filter(document_id__in=[doc_id for doc_id, _ in lost_documents]).values_list("id", flat=True)[:limit])
        pending = sorted(set(pending))
        Chunk.objects.filter(id__in=pending).update(dispatched_at=now)
        for doc_id, generation in lost_documents:
            transaction.on_commit(lambda d=doc_id, g=generation: events.mark_dispatched(document_id=d, generation=g))
        to_send = retry + pending
        if to_send:
            transaction.on_commit(lambda: dispatch_chunks(to_send))
    if expired or pending:
        logger.warning(
            "reconcile: re-dispatched %s chunks past their lease, %s pending chunks with no live task; "
            "%s chunks out of attempts set to error",
            len(retry), len(pending), gave_up,
        )
    return {"lease_expired": len(retry), "pending_lost": len(pending), "gave_up": gave_up}


def documents_finalize_settled() -> list[int]:
    """Finalize `indexing` documents whose chunks are all final (the chord
    callback was lost)."""
    candidates = Document.objects.filter(status=DocStatus.INDEXING, parsing_finished_at__isnull=False)
    counts: dict[int, dict[str, int]] = {document_id: {} for document_id in candidates.values_list("id", flat=True)}
    rows = (
        Chunk.objects.filter(document__in=candidates).values("document_id", "status").annotate(n=Count("id"))
        if counts
        else []
    )
    for row in rows:
        counts.setdefault(row["document_id"], {})[row["status"]] = row["n"]
    finalized = []
    for document_id, document_counts in counts.items():
        if derive_document_status(document_counts) != DocStatus.INDEXING:
            status = document_finalize(document_id=document_id)
            if status:
                logger.warning("reconcile: finalized document %s as %s (its chord callback was lost)", document_id, status)
                finalized.append(document_id)
    return finalized


def chunks_fail_stranded() -> int:
    """Chunks left `pending` or `processing` in a document that already
    finished (not cancelled) can never run: say so."""
    stranded = Chunk.objects.filter(status__in=Chunk.ACTIVE_STATUSES).filter(
        document__status__in=[DocStatus.READY, DocStatus.PARTIAL, DocStatus.ERROR]
    )
    count = stranded.update(status=ChunkStatus.ERROR, error="stranded: its document had already finished",
                            lease_expires_at=None, updated_at=timezone.now())
    if count:
        logger.warning("repair: %s stranded chunks set to error", count)
    return count


def documents_rederive_disagreeing() -> list[int]:
    """Finished documents whose status disagrees with their chunks get the
    status their chunks say."""
    fixed = []
    for document in Document.objects.filter(status__in=[DocStatus.READY, DocStatus.PARTIAL, DocStatus.ERROR]):
        counts = document_chunk_counts(document.id)
        if not counts and document.status == DocStatus.ERROR:
            continue
        derived = derive_document_status(counts)
        if derived == document.status or derived == DocStatus.INDEXING:
            continue
        Document.objects.filter(id=document.id, generation=document.generation).update(
            status=derived, error_message=_status_reason(derived, counts, document.id), updated_at=timezone.now()
        )
        logger.warning("repair: document %s was %s, its chunks say %s", document.id, document.status, derived)
        fixed.append(document.id)
    return fixed


def documents_redispatch_unparsed() -> dict[str, int]:
    """Documents whose parse never ran or died: running job but the document
    still `pending` past the grace period, or `indexing` with no chunks past
    the parse lease. Sent again up to MIRAGE_MAX_DISPATCH_ATTEMPTS times, then
    failed with the reason. Documents `pending` with no live job are failed."""
    now = timezone.now()
    grace = now - timedelta(seconds=settings.MIRAGE_DISPATCH_GRACE_SECONDS)
    parse_lease = now - timedelta(seconds=settings.MIRAGE_PARSE_LEASE_SECONDS)
    resent = failed = 0
    for document in Document.objects.filter(status__in=Document.ACTIVE_STATUSES).select_related("current_job"):
        job = document.current_job
        if document.status == DocStatus.PENDING and (job is None or job.is_final):
            with transaction.atomic():
                if Document.objects.filter(id=document.id, status=DocStatus.PENDING, generation=document.generation).update(
                    status=DocStatus.ERROR,
                    error_message="the document was never dispatched (its job is gone or finished)",
                    updated_at=now,
                ):
                    logger.warning("reconcile: document %s was never dispatched; set to error", document.id)
                    failed += 1
            continue
        if job is None or job.status != Job.Status.RUNNING:
            continue
        lost_before_parse = document.status == DocStatus.PENDING and job.started_at and job.started_at < grace
        lost_during_parse = (
            document.status == DocStatus.INDEXING
            and document.parsing_finished_at is None
            and document.parsing_started_at
            and document.parsing_started_at < parse_lease
        )
        if not (lost_before_parse or lost_during_parse):
            continue
        attempts = int(job.metadata.get("dispatch_attempts", 0))
        with transaction.atomic():
            if attempts >= settings.MIRAGE_MAX_DISPATCH_ATTEMPTS:
                job_services.job_fail(
                    job_id=job.id,
                    error_type="dispatch_lost",
                    error_message=f"the document was dispatched {attempts} times and never parsed",
                )
                Document.objects.filter(id=document.id, generation=document.generation).update(
                    status=DocStatus.ERROR,
                    error_message=f"the document was dispatched {attempts} times and never parsed",
                    updated_at=now,
                )
                failed += 1
                logger.warning("reconcile: document %s never parsed after %s dispatches; failed", document.id, attempts)
                continue
            Job.objects.filter(id=job.id).update(metadata={**job.metadata, "dispatch_attempts": attempts + 1})
            if document.status == DocStatus.INDEXING:
                # Let the next parse begin a fresh run.
                Document.objects.filter(id=document.id).update(status=DocStatus.PENDING)
            transaction.on_commit(lambda job=job: dispatch_job(job))
        resent += 1
        logger.warning("reconcile: re-dispatched the parse of document %s (job %s)", document.id, job.id)
    return {"parse_resent": resent, "never_dispatched_failed": failed}


def dispatch_job(job: Job) -> None:
    """Send the task that does a document job's work."""
    task_name = "documents.retry_chunks" if job.kind == Job.Kind.RETRY_CHUNKS else "documents.parse_document"
    result = signature(task_name, args=[job.subject_id, job.id]).apply_async()
    job_services.job_set_task_ids(job_id=job.id, task_id=result.id)

