"""Worker database connections: kept across tasks, closed by Django's rules.

Celery's Django fixup closes every connection around every task unless
`CELERY_DB_REUSE_MAX` is set; a worker would then open a PostgreSQL
connection per task."""

import time

import pytest
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection

from documents.tasks import embed_chunk
from mirage.celery import _keep_worker_connections, _recycle_connections, app

# Outside a test transaction: Django never closes a connection inside one.
pytestmark = [pytest.mark.unit, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def worker_settings(settings):
    """The settings a worker process gets at start (worker_init), with the
    default connection age (the test settings shorten it)."""
    settings.MIRAGE_WORKER_DATABASE_CONN_MAX_AGE = 60
    saved = connection.settings_dict["CONN_MAX_AGE"]
    connection.close()
    _keep_worker_connections()
    yield
    connection.close()
    connection.settings_dict["CONN_MAX_AGE"] = saved


def run_task_signals(fixup, task):
    """What a worker does around one task: Celery's fixup and ours."""
    fixup.on_task_prerun(sender=task)
    _recycle_connections(task=task)
    _recycle_connections(task=task)
    fixup.on_task_postrun(sender=task)


def test_a_connection_outlives_many_tasks():
    fixup = DjangoWorkerFixup(app)
    task = embed_chunk
    connection.ensure_connection()
    raw = connection.connection
    for _ in range(50):
        run_task_signals(fixup, task)
    assert connection.connection is raw


def test_a_connection_past_its_max_age_is_closed_between_tasks():
    fixup = DjangoWorkerFixup(app)
    task = embed_chunk
    connection.ensure_connection()
    connection.close_at = time.monotonic() - 1
    run_task_signals(fixup, task)
    assert connection.connection is None
