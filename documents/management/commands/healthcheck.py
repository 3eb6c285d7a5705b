"""python manage.py healthcheck [--migrations]: the container healthcheck.

Exits 0 when the database and Redis answer; otherwise prints what failed and
exits 1. With --migrations it also fails while migrations are unapplied, so
services that wait for the web container start only after `migrate` ran.
"""

from __future__ import annotations

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from redis.backoff import NoBackoff
from redis.retry import Retry

# Well below the container healthcheck's own timeout.
REDIS_TIMEOUT_SECONDS = 3


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())[:200] or exc.__class__.__name__


def database_error() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        return _one_line(exc)
    return None


def redis_error() -> str | None:
    client = redis.Redis.from_url(
        settings.MIRAGE_REDIS_URL,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        # One attempt: the client's default retries with backoff could outlast
        # the container healthcheck's timeout, which reads as a hang.
        retry=Retry(NoBackoff(), 0),
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return _one_line(exc)
    finally:
        client.close()
    return None


def unapplied_migrations() -> list[str]:
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    return [f"{migration.app_label}.{migration.name}" for migration, _backwards in plan]


class Command(BaseCommand):
    help = "Exit 0 when the database and Redis answer, 1 otherwise (container healthcheck)."
    # A healthcheck runs every few seconds: the system checks would only slow it.
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("--migrations", action="store_true", help="also fail while migrations are unapplied")

    def handle(self, *args, **options):
        failed = []
        checks = {"database": database_error(), "redis": redis_error()}
        if options["migrations"] and checks["database"] is None:
            pending = unapplied_migrations()
            checks["migrations"] = f"{len(pending)} unapplied, first {pending[0]}" if pending else None
        for name, error in checks.items():
            if error is None:
                self.stdout.write(f"{name}: ok")
            else:
                failed.append(name)
                self.stdout.write(f"{name}: FAILED {error}")
        if failed:
            raise CommandError(f"unhealthy: {', '.join(failed)}")
