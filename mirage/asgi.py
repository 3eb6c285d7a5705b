"""The ASGI application (uvicorn: the Procfile's and compose's web process).

Each web process borrows its database connections from a pool of its own
(psycopg_pool through Django's `pool` option) instead of opening one per
request: a new PostgreSQL connection costs the server a process start and
the web process a handshake on every request. Only here: Celery workers keep
a connection per thread (mirage/celery.py), and a pool made before a
prefork worker forks would be shared by its children.
"""

import os

from django.conf import settings
from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mirage.settings")

WEB_APPLICATION_NAME = "mirage-web"


def _pool_connections() -> None:
    size = settings.MIRAGE_WEB_DATABASE_POOL_SIZE
    for database in settings.DATABASES.values():
        # pg_stat_activity tells the web tier's sessions from the workers'.
        database.setdefault("OPTIONS", {}).setdefault("application_name", WEB_APPLICATION_NAME)
        # Django's pool and persistent connections exclude each other: an
        # operator who set MIRAGE_DATABASE_CONN_MAX_AGE keeps what they chose.
        if size > 0 and not database.get("CONN_MAX_AGE"):
            database["OPTIONS"]["pool"] = {
                "min_size": 1,
                "max_size": size,
                # A request waits this long for a free connection, then
                # answers 503 ("The database does not answer").
                "timeout": settings.MIRAGE_WEB_DATABASE_POOL_TIMEOUT_SECONDS,
            }


_pool_connections()
application = get_asgi_application()
