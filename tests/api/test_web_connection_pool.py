"""A web process borrows its database connections from a pool: requests do
not open a PostgreSQL session each, and open event streams hold none of the
pool's connections (a real uvicorn against the test database)."""

from __future__ import annotations

import contextlib
import os
import time

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from tests.support import figures
from tests.support.factories import make_project, make_user
from tests.support.processes import Stack, elapsed_since
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

POOL_SIZE = 2
# What mirage/asgi.py names the web process's sessions (importing it here
# would configure this process's connections as the web process's).
WEB_APPLICATION_NAME = "mirage-web"


def web_sessions() -> set[int]:
    """Backend pids of the web process's sessions on the test database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = %s",
            [WEB_APPLICATION_NAME],
        )
        return {row[0] for row in cursor.fetchall()}


@pytest.fixture
def web(tmp_path):
    stack = Stack(tmp_path, MIRAGE_WEB_DATABASE_POOL_SIZE=str(POOL_SIZE))
    try:
        stack.start_redis()
        yield stack.start_web()
    finally:
        stack.stop_all()


def test_requests_reuse_the_pools_connections_and_event_streams_hold_none(web):
    user = make_user()
    project = make_project(owner=user)
    headers = {"Authorization": f"Token {Token.objects.create(user=user).key}"}

    seen: set[int] = set()
    with httpx.Client(base_url=web, headers=headers, timeout=30) as client:
        for _ in range(20):
            assert client.get("/api/v1/projects/").status_code == 200
            seen |= web_sessions()
        # One request at a time needs one connection, kept between requests;
        # a connection per request would show up to twenty sessions, or none.
        assert 1 <= len(seen) <= POOL_SIZE, seen
        assert web_sessions(), "the pool keeps its connections between requests"

        # More open streams than the pool has connections: each gives its
        # connection back before streaming, so reads still get one.
        with contextlib.ExitStack() as streams:
            for _ in range(POOL_SIZE + 2):
                stream = streams.enter_context(
                    client.stream("GET", "/api/v1/events/", params={"project": project.id, "timeout": 60})
                )
                assert stream.status_code == 200
            for _ in range(5):
                assert client.get(f"/api/v1/projects/{project.id}/").status_code == 200
            seen |= web_sessions()
        assert len(seen) <= POOL_SIZE, seen


@pytest.mark.restarts_database
@pytest.mark.skipif(bool(os.environ.get("MIRAGE_DATABASE_URL")), reason="restarts only the project-local PostgreSQL")
def test_after_a_postgresql_restart_the_pool_answers_again_and_never_500(web):
    from mirage import devservices

    user = make_user()
    headers = {"Authorization": f"Token {Token.objects.create(user=user).key}"}
    codes: list[int] = []

    def answers(client: httpx.Client) -> bool:
        codes.append(client.get("/api/v1/projects/").status_code)
        return codes[-1] == 200

    with httpx.Client(base_url=web, headers=headers, timeout=30) as client:
        assert answers(client)
        # Every pooled connection of the web process dies with the server.
        connection.close()
        devservices.database_restart()
        restarted = time.monotonic()
        wait_until(lambda: answers(client), timeout=120, interval=0.5, message="the web process answers 200 again")
        recovery = elapsed_since(restarted)
        # The pool serves again, from new sessions.
        for _ in range(5):
            assert answers(client)
    # While no connection was to be had: 503 with a reason, never a 500.
    assert set(codes) <= {200, 503}, codes
    figures.record("web pool: PostgreSQL restarted", seconds_from_restart_to_200=recovery, answers=len(codes))
