"""The Celery application. Configuration lives in settings (CELERY_* names)."""
import os

from celery import Celery
from celery.signals import worker_init

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
