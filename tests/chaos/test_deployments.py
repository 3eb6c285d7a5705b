"""Two deployments on one Redis database: each sees only its own events,
tasks and results (every key and queue carries MIRAGE_REDIS_PREFIX, which by
default is derived from the deployment's database)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg
import pytest
from django.db import connection

from tests.support.processes import BASE_DIR, Stack, database_url
from tests.support.waiting import wait_until

# reset_sequences: both deployments' first project gets id 1, so their
# stream keys would collide without a prefix.
pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True, reset_sequences=True)]

SECOND_DATABASE = "test_mirage_second_deployment"


def _admin_connection():
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or None,
        port=db["PORT"] or None,
        user=db["USER"] or None,
        password=db["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )


@pytest.fixture
def second_database():
    with _admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{SECOND_DATABASE}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{SECOND_DATABASE}"')
    url = database_url().rsplit("/", 1)[0] + "/" + SECOND_DATABASE
    migrate = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "MIRAGE_DATABASE_URL": url},
    )
    assert migrate.returncode == 0, migrate.stderr
    yield url
    with _admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{SECOND_DATABASE}" WITH (FORCE)')


def _query(url: str, sql: str) -> list[tuple]:
    from urllib.parse import unquote, urlparse

    parsed = urlparse(url)
    with psycopg.connect(
        host=unquote(parsed.hostname or "") or None,
        port=parsed.port,
        user=parsed.username,
        dbname=parsed.path.lstrip("/"),
    ) as conn:
        return conn.execute(sql).fetchall()


def _documents(url: str) -> dict[str, str]:
    return dict(_query(url, "SELECT filename, status FROM documents_document"))


def test_two_deployments_on_one_redis_database_see_only_their_own_work(tmp_path, second_database):
    first = Stack(tmp_path / "first", MIRAGE_REDIS_PREFIX="", MIRAGE_RECONCILE_INTERVAL_SECONDS="2")
    second = Stack(
        tmp_path / "second",
        MIRAGE_REDIS_PREFIX="",
        MIRAGE_RECONCILE_INTERVAL_SECONDS="2",
        MIRAGE_DATABASE_URL=second_database,
    )
    # One Redis database for both.
    second.redis_url = first.redis_url
    second.env["MIRAGE_REDIS_URL"] = first.redis_url
    stacks = {"first": first, "second": second}
    try:
        first.start_redis()
        prefixes = {}
        for name, stack in stacks.items():
            printed = stack.manage(
                "shell", "-v", "0", "-c", "from django.conf import settings; print(settings.MIRAGE_REDIS_PREFIX)"
            )
            prefixes[name] = printed.stdout.strip()
            stack.env["MIRAGE_REDIS_PREFIX"] = prefixes[name]
            # One worker for every queue: the deployments' isolation is the
            # point here, not their topology.
            stack.start_worker("worker", "ingest,embed,maintenance", concurrency=2)
            stack.start_beat()
        assert prefixes["first"] != prefixes["second"]
        assert all(prefix.startswith("mirage-") for prefix in prefixes.values())

        for name, stack in stacks.items():
            directory = tmp_path / f"{name}-docs"
            directory.mkdir()
            for number in range(4):
                words = " ".join(f"{name}word{number}x{i}" for i in range(60))
                (directory / f"{name}-{number}.md").write_text(f"# {name} {number}\n\n{words}\n")
            # Both deployments' first project has id 1: the same stream key
            # without a prefix.
            stack.manage("ingest", str(directory), "--project", "shared-name", "--embedder", "hash")

        for name, stack in stacks.items():
            url = stack.env["MIRAGE_DATABASE_URL"]
            wait_until(
                lambda url=url: set(_documents(url).values()) == {"ready"} and len(_documents(url)) == 4,
                timeout=180,
                interval=0.5,
                message=f"{name}: every document ready",
            )
            assert set(_documents(url)) == {f"{name}-{number}.md" for number in range(4)}

        project_ids = {
            name: _query(stack.env["MIRAGE_DATABASE_URL"], "SELECT id FROM documents_project")
            for name, stack in stacks.items()
        }
        assert project_ids["first"] == project_ids["second"] == [(1,)]

        client = first.redis()
        keys = [key.decode() for key in client.scan_iter(count=1000)]
        assert keys
        foreign = [key for key in keys if not key.startswith(tuple(prefixes.values()))]
        assert foreign == []
        for name, prefix in prefixes.items():
            # Each deployment's event stream for its project 1 names only its own files.
            entries = client.xrange(f"{prefix}events:project:1")
            filenames = {json.loads(fields[b"data"]).get("filename") for _, fields in entries} - {None}
            assert filenames == {f"{name}-{number}.md" for number in range(4)}
            # Its results and chord counters live under its prefix.
            assert any(key.startswith(f"{prefix}celery-task-meta-") for key in keys)
        # Had a worker taken the other deployment's task, it would have found
        # another chunk (or none) under that id: every document is ready and
        # true in both, and nothing crashed.
        for stack in stacks.values():
            assert "Traceback" not in stack.log("worker")
            stack.manage("mirage_check")
    finally:
        for stack in stacks.values():
            stack.stop_all()
