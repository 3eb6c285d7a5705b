"""The document job kinds, registered with the job platform at start-up."""
from jobs import registry
from jobs.models import Job


def _run(job: Job) -> None:
    from documents import services

    services.dispatch_job(job)


def _cancel(job: Job) -> None:
    from documents import services

    services.document_cancel_work(job)


def _run_import(job: Job) -> None:
    from celery import signature

    from jobs import services as job_services

    result = signature("documents.import_directory", args=[job.id]).apply_async()
    job_services.job_set_task_ids(job_id=job.id, task_id=result.id)


def _project_ids_for(user):
    from documents.models import Project

    return Project.objects.filter(members=user).values("id")


def register_all() -> None:
    registry.register_project_scope(_project_ids_for)
    for kind in (Job.Kind.INDEX_DOCUMENT, Job.Kind.REINDEX_DOCUMENT, Job.Kind.RETRY_CHUNKS):
        registry.register(kind, registry.JobKindHandler(run=_run, cancel=_cancel))
    # An import only walks a directory and creates index jobs; those take the
    # indexing slots, so the import itself must not, or it could wait on its
    # own children.
    registry.register(Job.Kind.IMPORT_DIRECTORY, registry.JobKindHandler(run=_run_import, limited=False))
