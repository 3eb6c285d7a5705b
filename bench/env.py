"""The benchmarks' own database and Redis database, set up before Django.

The database is `mirage_bench` (MIRAGE_BENCH_DATABASE overrides the name)
on the server the project already uses (MIRAGE_DATABASE_URL or
`.mirage/database_url`), created and migrated when missing; Redis is
database 11 of MIRAGE_REDIS_URL's server, flushed at the start
(MIRAGE_BENCH_REDIS_URL overrides it). Files go to `.mirage/bench/`. Worker processes get the same
environment, so nothing a benchmark does reaches the developer's data.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support.corpus import CORPUS  # noqa: F401 - one definition for tests and benchmarks

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = BASE_DIR / ".mirage"
WORK_DIR = STATE_DIR / "bench"
MEDIA_ROOT = WORK_DIR / "media"
STATIC_ROOT = WORK_DIR / "static"
LOG_DIR = WORK_DIR / "logs"
BENCH_DATABASE = os.environ.get("MIRAGE_BENCH_DATABASE", "mirage_bench")
BENCH_REDIS_DB = 11


def _developer_database_url() -> str:
    url = os.environ.get("MIRAGE_DATABASE_URL", "")
    if url:
        return url
    url_file = STATE_DIR / "database_url"
    if not url_file.exists():
        sys.exit("no database: run `make services` first (or set MIRAGE_DATABASE_URL)")
    return url_file.read_text().strip()


def bench_database_url() -> str:
    parts = urlsplit(_developer_database_url())
    return urlunsplit(parts._replace(path="/" + BENCH_DATABASE))


def bench_redis_url() -> str:
    if os.environ.get("MIRAGE_BENCH_REDIS_URL"):
        return os.environ["MIRAGE_BENCH_REDIS_URL"]
    parts = urlsplit(os.environ.get("MIRAGE_REDIS_URL", "redis://127.0.0.1:6379/0"))
    return urlunsplit(parts._replace(path=f"/{BENCH_REDIS_DB}"))


def configure() -> None:
    """Point this process (and every process it starts) at the benchmark
    database and Redis database. Must run before Django is set up."""
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(MEDIA_ROOT, ignore_errors=True)
    MEDIA_ROOT.mkdir(parents=True)
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    STATIC_ROOT.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "mirage.settings",
            "MIRAGE_DATABASE_URL": bench_database_url(),
            "MIRAGE_REDIS_URL": bench_redis_url(),
            "MIRAGE_MEDIA_ROOT": str(MEDIA_ROOT),
            "MIRAGE_STATIC_ROOT": str(STATIC_ROOT),
            # Projects pin their embedder; this only keeps an unpinned code
            # path from loading torch by accident.
            "MIRAGE_EMBEDDER": "hash",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # The benchmark process itself logs warnings only, so its progress lines
    # stay readable; workers get INFO below, as in production.
    os.environ.setdefault("MIRAGE_LOG_LEVEL", "WARNING")


def worker_environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "MIRAGE_LOG_LEVEL": "INFO", **extra}


def setup_django() -> None:
    import django

    django.setup()
    _ensure_database()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)


def _ensure_database() -> None:
    import psycopg
    from django.db import connection

    params = connection.get_connection_params()
    params["dbname"] = "postgres"
    with psycopg.connect(**params, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [BENCH_DATABASE]).fetchone()
        if not exists:
            admin.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')


def redis_client():
    import redis

    return redis.Redis.from_url(bench_redis_url())


def check_redis_unshared() -> None:
    """Refuse to run while another process uses the benchmark's Redis
    database: its workers would take the benchmark's tasks (and the flush
    would destroy its data)."""
    import redis

    client = redis_client()
    database = client.connection_pool.connection_kwargs.get("db", 0)
    try:
        others = [entry for entry in client.client_list() if int(entry.get("db", -1)) == database]
    except redis.ResponseError:
        return  # CLIENT LIST not permitted: nothing can be checked
    own = client.client_id()
    others = [entry for entry in others if int(entry["id"]) != own]
    if others:
        addresses = sorted({entry["addr"] for entry in others})
        sys.exit(
            f"Redis database {database} at {bench_redis_url()} is in use by {len(others)} other connection(s) "
            f"({', '.join(addresses[:5])}{', ...' if len(addresses) > 5 else ''}); stop them or choose another "
            "database with MIRAGE_BENCH_REDIS_URL."
        )


def reset_state() -> None:
    """Empty every table the benchmarks fill (the stored files and the
    status history included) and the benchmark's Redis database: each
    benchmark starts from the same clean state."""
    from django.db import connection

    from common.filestore.models import StoredBlock, StoredFile
    from common.models import AuditEntry, StatusChange

    history = ", ".join(model._meta.db_table for model in (StoredBlock, StoredFile, StatusChange, AuditEntry))
    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE documents_chunk, documents_document, documents_project_members, documents_project, "
            f"documents_embeddingcacheentry, jobs_job, {history} RESTART IDENTITY CASCADE"
        )
    redis_client().flushdb()
    shutil.rmtree(MEDIA_ROOT, ignore_errors=True)
    MEDIA_ROOT.mkdir(parents=True)
