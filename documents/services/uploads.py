"""Submitting files: an upload becomes a stored file, a `pending` document
and the job that will index it."""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Sum

from common import history
from documents import events, jobkinds
from documents.models import Chunk, Document, Project
from documents.parsers import detect_type
from documents.services.transitions import document_record_created
from jobs import services as job_services
from jobs.models import Job

DETECTION_HEAD_BYTES = 64 * 1024


class UploadRejected(Exception):
    """A file that cannot become a document; the message says why."""


class UploadTooLarge(UploadRejected):
    pass


class EmptyUpload(UploadRejected):
    pass


class QuotaExceeded(UploadRejected):
    """The project is at one of its quotas; the message names it and its value."""


def _check_quotas(*, project: Project, size: int) -> None:
    if project.max_documents is not None:
        documents = Document.objects.filter(project=project).count()
        if documents >= project.max_documents:
            raise QuotaExceeded(
                f"the project holds {documents} documents, its quota (max_documents) is {project.max_documents}"
            )
    if project.max_chunks is not None:
        chunks = Chunk.objects.filter(document__project=project).count()
        if chunks >= project.max_chunks:
            raise QuotaExceeded(f"the project holds {chunks} chunks, its quota (max_chunks) is {project.max_chunks}")
    if project.max_upload_mb_total is not None:
        stored = Document.objects.filter(project=project).aggregate(total=Sum("size_bytes"))["total"] or 0
        if stored + size > project.max_upload_mb_total * 1024 * 1024:
            raise QuotaExceeded(
                f"the project's files would take {(stored + size) / (1024 * 1024):.1f} MB, its quota "
                f"(max_upload_mb_total) is {project.max_upload_mb_total} MB"
            )


_UNSAFE_FILENAME_CHARS = re.compile(r"[^\w.\- ()+,@]", re.UNICODE)
MAX_DISPLAY_NAME = 255


def display_filename(name: str) -> str:
    """The name as the user gave it, for display, the API and search results,
    with only what is dangerous taken out: any directory part, control
    characters and the format characters that reorder text (bidi overrides
    and isolates, which can make `exe.pdf` read as `fdp.exe`)."""
    name = unicodedata.normalize("NFC", name or "")
    name = name.replace("\\", "/").split("/")[-1]
    name = "".join(char for char in name if unicodedata.category(char) not in ("Cc", "Cf")).strip()
    if name in ("", ".", ".."):
        name = "document"
    return name[:MAX_DISPLAY_NAME]


def sanitize_filename(name: str) -> str:
    """The name the stored file gets: a safe base name (letters, digits and
    a few punctuation marks), no directories, no control characters, no
    leading dots."""
    name = display_filename(name)
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
    # Handed to the caller open (it closes it): not a `with` here.
    spool = tempfile.NamedTemporaryFile(prefix="mirage-upload-", delete=True)  # noqa: SIM115
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
    priority: str = Job.Priority.NORMAL,
    actor: str = history.SYSTEM,
) -> Submission:
    """Store a file and queue its indexing.

    Returns the existing document (created=False, nothing started) when the
    project already holds the same bytes. Raises UploadTooLarge, EmptyUpload
    or parsers.UnsupportedFileType (with `detected_type`) for files that
    cannot become documents.
    """
    storage_name = sanitize_filename(filename)
    filename = display_filename(filename)
    spool, sha256, size, head = _spool(source, settings.MIRAGE_MAX_UPLOAD_MB * 1024 * 1024)
    with spool:
        if size == 0:
            raise EmptyUpload("file is empty")
        existing = Document.objects.filter(project=project, content_sha256=sha256).first()
        if existing is not None:
            return Submission(document=existing, job=existing.current_job, created=False)
        _check_quotas(project=project, size=size)
        file_type = detect_type(head, filename)
        document = Document(
            project=project,
            filename=filename,
            file_type=file_type,
            size_bytes=size,
            content_sha256=sha256,
            metadata=metadata or {},
        )
        try:
            with transaction.atomic():
                # The bytes and the rows in one transaction: with the
                # database filestore (the default) a process that dies here
                # leaves neither behind.
                document.file.save(storage_name, File(spool, name=storage_name), save=False)
                document.save()
                job = _queue_indexing(document=document, parent_job=parent_job, priority=priority, actor=actor)
        except IntegrityError:
            # The same bytes arrived concurrently and the other upload won.
            _discard_stored_file(document)
            existing = Document.objects.get(project=project, content_sha256=sha256)
            return Submission(document=existing, job=existing.current_job, created=False)
        except BaseException:
            # A storage outside the database (a bucket) kept the bytes.
            _discard_stored_file(document)
            raise
    return Submission(document=document, job=job, created=True)


def _queue_indexing(*, document: Document, parent_job: Job | None, priority: str, actor: str) -> Job:
    """The new document's index job, its history and audit entries, and
    the event once the upload commits."""
    job = job_services.job_create(
        kind=jobkinds.INDEX_DOCUMENT,
        project_id=document.project_id,
        subject_id=document.id,
        parent=parent_job,
        priority=priority,
        metadata={"filename": document.filename},
        actor=actor,
    )
    Document.objects.filter(id=document.id).update(current_job=job)
    document.current_job = job
    document_record_created(document=document, actor=actor)
    history.audit_record(
        project_id=document.project_id,
        actor=actor,
        action="document.uploaded",
        target=f"document {document.id} {document.filename}",
        document_id=document.id,
        size_bytes=document.size_bytes,
        sha256=document.content_sha256,
        file_type=document.file_type,
        priority=priority,
    )
    transaction.on_commit(lambda: events.publish_document(document))
    return job


def _discard_stored_file(document: Document) -> None:
    """Delete an upload's bytes that no document will hold, where the
    transaction's rollback did not already (best effort: the process may be
    on its way down)."""
    if document.file.name and not getattr(default_storage, "transactional", False):
        with contextlib.suppress(Exception):
            default_storage.delete(document.file.name)
