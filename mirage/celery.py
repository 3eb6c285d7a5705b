"""The Celery application. Configuration lives in settings (CELERY_* names)."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mirage.settings")

app = Celery("mirage")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _keep_worker_connections(**kwargs) -> None:
    """Worker threads run thousands of short tasks: each keeps its database
    connection (health-checked before reuse, so a database restart costs
    nothing) instead of opening one per task."""
    from django.conf import settings

    for database in settings.DATABASES.values():
        database["CONN_MAX_AGE"] = settings.MIRAGE_WORKER_DATABASE_CONN_MAX_AGE


@task_prerun.connect
@task_postrun.connect
def _recycle_connections(**kwargs) -> None:
    """What Django does around a request: close this thread's connections
    that saw errors or outlived CONN_MAX_AGE, keep the others (see
    CELERY_DB_REUSE_MAX in settings)."""
    from django.db import close_old_connections

    task = kwargs.get("task")
    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()
