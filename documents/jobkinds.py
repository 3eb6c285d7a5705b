"""The document job kinds, registered with the job platform at start-up."""

from common import scope
from jobs import registry
from jobs.models import Job

INDEX_DOCUMENT = "index_document"
REINDEX_DOCUMENT = "reindex_document"
RETRY_CHUNKS = "retry_chunks"
IMPORT_DIRECTORY = "import_directory"
MIGRATE_EMBEDDER = "migrate_embedder"
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


def _run_migration(job: Job) -> None:
    from documents import services

    services.dispatch_migration_step(job_id=job.id)


def _cancel_migration(job: Job, *, actor: str, reason: str) -> None:
    from documents import services

    services.embedder_migration_abandon(job, actor=actor, reason=reason)


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
    # A migration embeds one batch at a time in its own chain of tasks and
    # may outlast any run's time limit: it takes no indexing slot, and its
    # reconciler judges it by its progress instead of a timeout
    # (services.embedders).
    registry.register(
        MIGRATE_EMBEDDER,
        registry.JobKindHandler(
            label="Change the embedding model",
            run=_run_migration,
            cancel=_cancel_migration,
            limited=False,
            times_out=False,
        ),
    )
