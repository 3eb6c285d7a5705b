"""Live events over Server-Sent Events, served by a real uvicorn against the
test database and Redis, with the session's Celery worker doing the work."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
import redis
from django.conf import settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from common.events import stream_key
from documents.api import events as events_api
from tests.support import figures
from tests.support.factories import make_project, make_user, markdown_document, submit_bytes
from tests.support.processes import Stack, free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

DOCUMENT_ORDER = {"pending": 0, "indexing": 1, "ready": 2}
JOB_ORDER = {"pending": 0, "running": 1, "completed": 2}


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    """uvicorn serving the ASGI application on a free port."""
    stack = Stack(tmp_path_factory.mktemp("sse"), MIRAGE_REDIS_URL=settings.MIRAGE_REDIS_URL)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    try:
        stack.spawn(
            "uvicorn",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "mirage.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-access-log",
                "--timeout-graceful-shutdown",
                "5",
            ],
        )
        wait_until(lambda: _answers(base_url), timeout=60, interval=0.2, message=f"uvicorn answers on {base_url}")
        yield base_url
    finally:
        print(stack.log("uvicorn")[-3000:])
        stack.stop_all()


def _answers(base_url: str) -> bool:
    try:
        httpx.get(f"{base_url}/api/v1/events/", timeout=2)
    except httpx.TransportError:
        return False
    return True


def token_for(user) -> str:
    return Token.objects.create(user=user).key


@dataclass
class Event:
    id: str
    event: str
    data: dict


@dataclass
class SseClient:
    """Reads one event stream in a thread, so that the test can act while
    events arrive."""

    url: str
    headers: dict
    events: list[Event] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    status_code: int | None = None
    error: Exception | None = None
    connected: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self):
        self._response: httpx.Response | None = None
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=60.0))
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self.url, headers=self.headers) as response:
                self._response = response
                self.status_code = response.status_code
                fields: dict[str, list[str]] = {}
                for line in response.iter_lines():
                    if line == "":
                        if "id" in fields:
                            self.events.append(
                                Event(fields["id"][-1], fields["event"][-1], json.loads("\n".join(fields["data"])))
                            )
                        fields = {}
                    elif line.startswith(":"):
                        self.comments.append(line[1:].strip())
                        if line[1:].strip() == "connected":
                            self.connected.set()
                    else:
                        name, _, value = line.partition(":")
                        fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        except (httpx.HTTPError, httpx.StreamError) as exc:
            self.error = exc
        finally:
            self.ended.set()

    def close(self) -> None:
        if self._response is not None and not self.ended.is_set():
            # Closing the socket from this thread would not wake the reader
            # blocked in recv() until the next heartbeat; a shutdown does.
            sock = self._response.extensions["network_stream"].get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._client.close()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), f"stream reader of {self.url} did not stop"

    def of(self, event: str, subject_id: int) -> list[dict]:
        return [e.data for e in list(self.events) if e.event == event and e.data["id"] == subject_id]

    def ids(self) -> list[str]:
        return [e.id for e in list(self.events)]


def open_stream(base_url: str, token: str, *, headers: dict | None = None, **params) -> SseClient:
    query = "&".join(f"{name}={value}" for name, value in params.items())
    return SseClient(
        f"{base_url}/api/v1/events/?{query}",
        {"Authorization": f"Token {token}", "Accept": "text/event-stream", **(headers or {})},
    )


def read_to_end(base_url: str, token: str, *, headers: dict | None = None, **params) -> SseClient:
    """A stream bounded by `timeout`: returns once the server ended it."""
    stream = open_stream(base_url, token, headers=headers, **params)
    assert stream.ended.wait(timeout=float(params.get("timeout", 0)) + 60), "the server did not end the stream"
    stream.close()
    assert stream.error is None, stream.error
    return stream


def id_key(stream_id: str) -> tuple[int, int]:
    milliseconds, sequence = stream_id.split("-")
    return int(milliseconds), int(sequence)


def ranks(statuses: list[str], order: dict[str, int]) -> list[int]:
    return [order[status] for status in statuses]


def test_members_follow_their_document_and_job_live_and_see_nothing_of_other_projects(worker, server):
    alice, bob = make_user(), make_user()
    alice_project = make_project(members=[alice])
    bob_project = make_project(members=[bob])
    alice_token, bob_token = token_for(alice), token_for(bob)
    alice_stream = open_stream(server, alice_token, project=alice_project.id, timeout=240)
    bob_stream = open_stream(server, bob_token, project=bob_project.id, timeout=240)
    try:
        wait_until(
            lambda: alice_stream.connected.is_set() and bob_stream.connected.is_set(),
            timeout=30,
            message="both streams connected",
        )
        started = time.monotonic()
        alice_submission = submit_bytes(alice_project, markdown_document(sections=4), "alice.md")
        bob_submission = submit_bytes(bob_project, markdown_document(sections=2), "bob.md")
        alice_document, alice_job = alice_submission.document, alice_submission.job
        bob_document, bob_job = bob_submission.document, bob_submission.job

        def finished(stream, document, job) -> bool:
            documents = stream.of("document.status", document.id)
            jobs = stream.of("job.progress", job.id)
            return bool(documents and documents[-1]["status"] == "ready" and jobs and jobs[-1]["status"] == "completed")

        wait_until(
            lambda: finished(alice_stream, alice_document, alice_job),
            timeout=120,
            interval=0.1,
            message="alice sees her document ready and its job completed",
        )
        figures.record(
            "sse_document_ready_seen_by_client",
            seconds=round(time.monotonic() - started, 2),
            events=len(alice_stream.events),
        )
        wait_until(
            lambda: finished(bob_stream, bob_document, bob_job),
            timeout=120,
            interval=0.1,
            message="bob sees his document ready and its job completed",
        )
    finally:
        alice_stream.close()
        bob_stream.close()

    assert alice_stream.status_code == 200 and bob_stream.status_code == 200
    document_statuses = [d["status"] for d in alice_stream.of("document.status", alice_document.id)]
    assert document_statuses[0] in ("pending", "indexing")
    assert document_statuses[-1] == "ready"
    assert "indexing" in document_statuses
    assert ranks(document_statuses, DOCUMENT_ORDER) == sorted(ranks(document_statuses, DOCUMENT_ORDER))
    # Progress events of concurrent embed tasks may be published out of
    # order; what a client can rely on is that the final state comes last.
    job_events = alice_stream.of("job.progress", alice_job.id)
    assert [j["status"] for j in job_events].count("completed") == 1
    assert job_events[-1]["status"] == "completed" and job_events[-1]["progress_percentage"] == 100
    assert "running" in [j["status"] for j in job_events]
    assert alice_stream.ids() == sorted(alice_stream.ids(), key=id_key)
    assert len(set(alice_stream.ids())) == len(alice_stream.ids())

    # Each stream carries its own project's events only.
    assert {e.data["project_id"] for e in alice_stream.events} == {alice_project.id}
    assert {e.data["project_id"] for e in bob_stream.events} == {bob_project.id}
    assert not bob_stream.of("document.status", alice_document.id)
    assert not bob_stream.of("job.progress", alice_job.id)
    denied = httpx.get(
        f"{server}/api/v1/events/",
        params={"project": alice_project.id},
        headers={"Authorization": f"Token {bob_token}"},
        timeout=30,
    )
    assert denied.status_code == 404 and denied.json() == {"detail": "Not found."}

    # Everything the project published reached the live client, in order.
    published = [
        entry_id
        for entry_id, _ in redis.Redis.from_url(settings.MIRAGE_REDIS_URL, decode_responses=True).xrange(
            stream_key(alice_project.id)
        )
    ]
    assert alice_stream.ids() == published

    # Reconnecting resumes strictly after the last event seen, by header, by
    # query parameter, and with the header winning over `from=start`.
    pivot = len(published) // 2
    later = published[pivot + 1 :]
    assert later, "the document produced too few events to test resuming"
    by_header = read_to_end(
        server, alice_token, headers={"Last-Event-ID": published[pivot]}, project=alice_project.id, timeout=1
    )
    assert by_header.ids() == later
    by_query = read_to_end(server, alice_token, project=alice_project.id, last_event_id=published[pivot], timeout=1)
    assert by_query.ids() == later
    header_wins = read_to_end(
        server,
        alice_token,
        headers={"Last-Event-ID": published[pivot]},
        project=alice_project.id,
        timeout=1,
        **{"from": "start"},
    )
    assert header_wins.ids() == later
    from_start = read_to_end(server, alice_token, project=alice_project.id, timeout=1, **{"from": "start"})
    assert from_start.ids() == published
    assert [e.data for e in from_start.events] == [e.data for e in alice_stream.events]
    after_last = read_to_end(
        server, alice_token, headers={"Last-Event-ID": published[-1]}, project=alice_project.id, timeout=1
    )
    assert after_last.events == [] and "connected" in after_last.comments


def test_job_events_never_go_back_to_pending(worker):
    project = make_project()
    submission = submit_bytes(project, markdown_document(sections=2), "order.md")
    client = redis.Redis.from_url(settings.MIRAGE_REDIS_URL, decode_responses=True)

    def job_statuses() -> list[str]:
        entries = client.xrange(stream_key(project.id))
        return [
            data["status"]
            for _, fields in entries
            if fields["event"] == "job.progress" and (data := json.loads(fields["data"]))["id"] == submission.job.id
        ]

    statuses = wait_until(
        lambda: "completed" in (found := job_statuses()) and found, timeout=120, message="job completed"
    )
    assert ranks(statuses, JOB_ORDER) == sorted(ranks(statuses, JOB_ORDER)), statuses


def test_stream_from_now_skips_earlier_events_and_ends_after_its_timeout(server):
    user = make_user()
    project = make_project(members=[user])
    token = token_for(user)
    client = redis.Redis.from_url(settings.MIRAGE_REDIS_URL, decode_responses=True)
    client.xadd(
        stream_key(project.id), {"event": "job.progress", "data": json.dumps({"id": 1, "project_id": project.id})}
    )
    stream = open_stream(server, token, project=project.id, timeout=30)
    try:
        assert stream.connected.wait(timeout=30)
        new_id = client.xadd(
            stream_key(project.id), {"event": "job.progress", "data": json.dumps({"id": 2, "project_id": project.id})}
        )
        wait_until(lambda: stream.events, timeout=30, message="the new event arrives")
        assert [(e.id, e.data["id"]) for e in stream.events] == [(new_id, 2)]
    finally:
        stream.close()

    started = time.monotonic()
    bounded = read_to_end(server, token, project=project.id, timeout=1.5)
    assert bounded.status_code == 200 and bounded.events == []
    assert 1.0 <= time.monotonic() - started < 30


def test_closed_streams_release_their_redis_connections(server):
    user = make_user()
    project = make_project(members=[user])
    token = token_for(user)
    client = redis.Redis.from_url(settings.MIRAGE_REDIS_URL)
    name = f"mirage:sse:{project.id}"

    def open_connections() -> int:
        return sum(1 for entry in client.client_list() if entry.get("name") == name)

    streams = [open_stream(server, token, project=project.id) for _ in range(5)]
    try:
        for stream in streams:
            assert stream.connected.wait(timeout=30)
        wait_until(lambda: open_connections() == 5, timeout=30, message="five stream connections in Redis")
    finally:
        for stream in streams:
            stream.close()
    # uvicorn notices each disconnect, Django cancels the generator and its
    # Redis client closes; nothing lingers until the next heartbeat.
    wait_until(lambda: open_connections() == 0, timeout=30, message="stream connections closed")


def test_access_rules_and_parameter_errors_answer_json(server):
    owner, stranger, staff = make_user(), make_user(), make_user(staff=True)
    project = make_project(members=[owner])
    owner_token, stranger_token, staff_token = token_for(owner), token_for(stranger), token_for(staff)
    url = f"{server}/api/v1/events/"
    sse = {"Accept": "text/event-stream"}

    def get(token: str | None, params: dict, headers: dict | None = None) -> httpx.Response:
        auth = {"Authorization": f"Token {token}"} if token else {}
        return httpx.get(url, params=params, headers={**sse, **auth, **(headers or {})}, timeout=30)

    cases = [
        (None, {"project": project.id}, None, 401),
        ("not-a-token", {"project": project.id}, None, 401),
        (stranger_token, {"project": project.id}, None, 404),
        (owner_token, {"project": project.id + 10_000}, None, 404),
        (owner_token, {}, None, 400),
        (owner_token, {"project": "abc"}, None, 400),
        (owner_token, {"project": project.id, "timeout": 301}, None, 400),
        (owner_token, {"project": project.id, "from": "yesterday"}, None, 400),
        (owner_token, {"project": project.id, "last_event_id": "12"}, None, 400),
        (owner_token, {"project": project.id}, {"Last-Event-ID": "garbage"}, 400),
        (owner_token, {"project": project.id, "projet": 1}, None, 400),
    ]
    for token, params, headers, expected in cases:
        response = get(token, params, headers)
        assert response.status_code == expected, (params, headers, response.status_code, response.text)
        assert response.headers["content-type"] == "application/json", (params, response.headers)
        assert response.json(), params
    assert get(None, {"project": project.id}).headers["www-authenticate"] == "Token"
    head = httpx.head(
        url, params={"project": project.id}, headers={"Authorization": f"Token {owner_token}"}, timeout=30
    )
    assert head.status_code == 405

    # Staff may follow any project; a session login works like a token.
    staff_response = get(staff_token, {"project": project.id, "timeout": 0.5})
    assert staff_response.status_code == 200
    assert staff_response.headers["content-type"].startswith("text/event-stream")
    with httpx.Client(base_url=server, timeout=30) as browser:
        login = browser.get("/admin/login/")
        response = browser.post(
            "/admin/login/?next=/admin/",
            data={
                "username": staff.username,
                "password": "pw-for-tests-123",
                "csrfmiddlewaretoken": login.cookies["csrftoken"],
            },
        )
        assert "sessionid" in browser.cookies, response.status_code
        session_response = browser.get("/api/v1/events/", params={"project": project.id, "timeout": 0.5}, headers=sse)
        assert session_response.status_code == 200


def test_stream_sends_keepalive_comments_and_relays_events_as_they_arrive(monkeypatch):
    """The generator alone, with a short heartbeat."""
    monkeypatch.setattr(events_api, "HEARTBEAT_SECONDS", 0.2)
    project_id = 900_000_000 + free_port()
    key = stream_key(project_id)
    client = redis.Redis.from_url(settings.MIRAGE_REDIS_URL, decode_responses=True)
    client.delete(key)
    first = client.xadd(key, {"event": "job.progress", "data": '{"id": 1}'})

    async def collect() -> list[str]:
        parts = []
        stream = events_api.event_stream(project_id=project_id, after=first, timeout=20)
        try:
            async for part in stream:
                parts.append(part)
                keepalives = sum(": keepalive" in p for p in parts)
                if keepalives == 2 and not any(p.startswith("id:") for p in parts):
                    await asyncio.to_thread(
                        client.xadd, key, {"event": "document.status", "data": '{"id": 2,\n"x": 1}'}
                    )
                if any(p.startswith("id:") for p in parts) and keepalives >= 3:
                    break
        finally:
            await stream.aclose()
        return parts

    try:
        parts = asyncio.run(asyncio.wait_for(collect(), timeout=30))
    finally:
        client.delete(key)
    assert parts[0] == "retry: 3000\n: connected\n\n"
    relayed = [p for p in parts if p.startswith("id:")]
    assert len(relayed) == 1
    assert relayed[0].startswith("id: ") and "\nevent: document.status\n" in relayed[0]
    assert relayed[0].endswith('data: {"id": 2,\ndata: "x": 1}\n\n')
    assert parts.index(relayed[0]) > 2


def test_stream_without_timeout_ends_after_its_lifetime(monkeypatch):
    monkeypatch.setattr(events_api, "STREAM_LIFETIME_SECONDS", 0.5)

    async def collect() -> list[str]:
        return [part async for part in events_api.event_stream(project_id=900_000_000, after="0-0", timeout=None)]

    assert asyncio.run(asyncio.wait_for(collect(), timeout=30)) == ["retry: 3000\n: connected\n\n"]


def test_redis_down_when_a_stream_opens_answers_503_json(monkeypatch):
    user = make_user()
    project = make_project(members=[user])
    dead = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, decode_responses=True)
    monkeypatch.setattr("common.events.client", lambda: dead)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")

    response = client.get("/api/v1/events/", {"project": project.id}, HTTP_ACCEPT="text/event-stream")

    assert response.status_code == 503
    assert response["Content-Type"] == "application/json"
    assert "Redis" in response.json()["detail"]
