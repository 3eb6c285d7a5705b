"""Directory imports: every supported file under a path inside
MIRAGE_IMPORT_ROOTS becomes a document with its own index job, as a child of
the import job."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from django.conf import settings
from django.db import transaction

from common import history
from documents import jobkinds
from documents.models import Project
from documents.parsers import ParseError
from jobs import services as job_services
from jobs.models import Job

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = {
    ".md",
    ".markdown",
    ".pdf",
    ".epub",
    ".txt",
    ".text",
    ".html",
    ".htm",
    ".xhtml",
    ".docx",
    ".docm",
    ".pptx",
    ".pptm",
    ".xlsx",
    ".xlsm",
    ".odt",
    ".odp",
    ".ods",
}


class ImportPathRejected(ValueError):
    """The path may not be imported; the message says why."""


def _roots() -> list[Path]:
    return [Path(root).resolve() for root in settings.MIRAGE_IMPORT_ROOTS if root]


def _inside(path: Path, roots: list[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def validate_import_path(raw: str) -> Path:
    """Return the resolved directory, or raise ImportPathRejected."""
    if not isinstance(raw, str) or not raw.strip():
        raise ImportPathRejected("path is required")
    if "\x00" in raw:
        raise ImportPathRejected("path contains a NUL character")
    path = Path(raw)
    if not path.is_absolute():
        raise ImportPathRejected("path must be absolute")
    if ".." in path.parts:
        raise ImportPathRejected("path must not contain '..'")
    roots = _roots()
    if not roots:
        raise ImportPathRejected("imports are disabled: MIRAGE_IMPORT_ROOTS is empty")
    try:
        resolved = path.resolve(strict=True)
    except (FileNotFoundError, RuntimeError, OSError):
        raise ImportPathRejected("path does not exist") from None
    if not _inside(resolved, roots):
        raise ImportPathRejected("path resolves outside MIRAGE_IMPORT_ROOTS")
    if not resolved.is_dir():
        raise ImportPathRejected("path is not a directory")
    return resolved


def import_start(
    *, project: Project, path: str, actor: str = history.SYSTEM, priority: str = Job.Priority.NORMAL
) -> Job:
    """Queue the import of a directory; every file becomes a document whose
    index job has the import's `priority`."""
    directory = validate_import_path(path)
    with transaction.atomic():
        job = job_services.job_create(
            kind=jobkinds.IMPORT_DIRECTORY,
            project_id=project.id,
            metadata={"path": str(directory), "actor": actor},
            priority=priority,
            progress_message=f"waiting to scan {directory}",
            actor=actor,
        )
        history.audit_record(
            project_id=project.id,
            actor=actor,
            action="directory.import",
            target=str(directory),
            job_id=job.id,
            priority=priority,
        )
    return job


def _candidate_files(directory: Path, roots: list[Path]):
    for dirpath, dirnames, filenames in os.walk(directory, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() not in SUPPORTED_SUFFIXES:
                continue
            resolved = path.resolve()
            # A symlink must not lead out of the allowed roots.
            if not _inside(resolved, roots) or not resolved.is_file():
                continue
            yield path, resolved


def import_run(*, job_id: int) -> None:
    from documents import services

    job = Job.objects.filter(id=job_id, status=Job.Status.RUNNING).first()
    if job is None:
        return
    project = Project.objects.get(id=job.project_id)
    directory = Path(job.metadata["path"])
    roots = _roots()
    if not _inside(directory.resolve(), roots):
        job_services.job_fail(job_id=job_id, error_type="rejected", error_message="path is outside MIRAGE_IMPORT_ROOTS")
        return
    skipped: list[dict] = []
    for scanned, (path, resolved) in enumerate(_candidate_files(directory, roots), start=1):
        if Job.objects.filter(id=job_id, status=Job.Status.RUNNING).count() == 0:
            return  # cancelled while scanning
        relative = str(path.relative_to(directory))
        try:
            with open(resolved, "rb") as handle:
                services.document_submit(
                    project=project,
                    source=handle,
                    filename=path.name,
                    metadata={"import_path": relative},
                    parent_job=job,
                    priority=job.priority,
                    actor=job.metadata.get("actor", history.SYSTEM),
                )
        except (services.UploadRejected, ParseError, OSError) as exc:
            skipped.append({"path": relative, "reason": str(exc)})
        job_services.job_set_progress(
            job_id=job_id, percentage=1, message=f"scanned {scanned} files", files_scanned=scanned
        )
    Job.objects.filter(id=job_id).update(metadata={**job.metadata, "skipped": skipped, "scan_finished": True})
    job_services.job_rollup(parent_id=job_id)
