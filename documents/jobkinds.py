"""The document job kinds, registered with the job platform at start-up."""

from common import scope
from jobs import registry
from jobs.models import Job

INDEX_DOCUMENT = "index_document"
REINDEX_DOCUMENT = "reindex_document"
RETRY_CHUNKS = "retry_chunks"
IMPORT_DIRECTORY = "import_directory"
DOCUMENT_KINDS = (INDEX_DOCUMENT, REINDEX_DOCUMENT, RETRY_CHUNKS)


def _run(job: Job) -> None:
    from documents import services

    services.dispatch_job(job)


def _cancel(job: Job, *, actor: str, reason: str) -> None:
    from documents import services

    services.document_cancel_work(job, actor=actor, reason=reason)


def _run_import(job: Job) -> None:
    from celery import signature

    from jobs import services as job_services

    result = signature("documents.import_directory", args=[job.id]).apply_async()
    job_services.job_set_task_ids(job_id=job.id, task_id=result.id)


def _project_ids_for(user):
    from documents.models import Project

    return Project.objects.filter(members=user).values("id")


def register_all() -> None:
    scope.register_project_scope(_project_ids_for)
    labels = {
        INDEX_DOCUMENT: "Index a document",
        REINDEX_DOCUMENT: "Reindex a document",
        RETRY_CHUNKS: "Retry failed chunks",
    }
    for kind, label in labels.items():
        registry.register(kind, registry.JobKindHandler(label=label, run=_run, cancel=_cancel))
    # An import only walks a directory and creates index jobs; those take the
    # indexing slots, so the import itself must not, or it could wait on its
    # own children.
    registry.register(
        IMPORT_DIRECTORY, registry.JobKindHandler(label="Import a directory", run=_run_import, limited=False)
    )
