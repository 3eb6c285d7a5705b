"""A web process borrows its database connections from a pool: requests do
not open a PostgreSQL session each, and open event streams hold none of the
pool's connections (a real uvicorn against the test database)."""

from __future__ import annotations

import contextlib

import httpx
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from tests.support.factories import make_project, make_user
from tests.support.processes import Stack

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
