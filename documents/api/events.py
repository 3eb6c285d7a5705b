"""GET /api/v1/events/?project=ID: a project's live events as Server-Sent Events.

Workers publish every document and job state change into the project's Redis
stream (`common.events`); this view relays that stream with XREAD BLOCK, so no
client polls the database. A stream entry id is the SSE `id:`, which makes
the browser's own `Last-Event-ID` on reconnect resume exactly where the
connection broke.

Authentication, permissions and errors go through DRF's usual dispatch (JSON
answers: 400, 401, 404), run in a thread. The stream itself is an async
generator served by the ASGI server (uvicorn): an open stream waits on Redis
in the event loop, keeps no database connection and no thread busy. (Django's
ASGI handler does park one idle thread per open request, for the
thread-sensitive sync_to_async of its middleware, until the request ends.)
Under WSGI (runserver) Django would buffer the whole stream, so clients
always go through uvicorn.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator

import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from django.urls import path
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from common import events as job_events
from common.api import StrictSerializer, validate_query
from common.events import stream_key
from documents import selectors

logger = logging.getLogger(__name__)

# Proxies and load balancers commonly drop a connection idle for 30-60 s.
HEARTBEAT_SECONDS = 15.0
MAX_TIMEOUT_SECONDS = 300
# A stream without `timeout` still ends after this long: the client reconnects
# (losing nothing, thanks to Last-Event-ID) and its credentials and
# membership are checked again, so a removed member stops receiving events.
STREAM_LIFETIME_SECONDS = 3600
# Entries relayed per XREAD; a client that fell far behind catches up in
# batches rather than in one huge read.
READ_BATCH = 200
# How long a browser waits before reconnecting after the stream ended.
RETRY_MILLISECONDS = 3000
STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
FROM_START = "0-0"


def _stream_id(value: str) -> str:
    if not STREAM_ID.match(value):
        raise serializers.ValidationError("Not an event id (expected <milliseconds>-<sequence>).")
    return value


class EventsQuerySerializer(StrictSerializer):
    project = serializers.IntegerField(min_value=1)
    last_event_id = serializers.CharField(required=False, validators=[_stream_id])
    timeout = serializers.FloatField(required=False, min_value=0.1, max_value=MAX_TIMEOUT_SECONDS)

    def get_fields(self):
        fields = super().get_fields()
        # `from` is a Python keyword, so it cannot be a class attribute.
        fields["from"] = serializers.ChoiceField(choices=["start", "now"], required=False)
        return fields


def format_event(entry_id: str, fields: dict[str, str]) -> str:
    lines = [f"id: {entry_id}", f"event: {fields.get('event', 'message')}"]
    # A newline inside a value would end the field early; SSE carries
    # multi-line data as several `data:` lines.
    lines += [f"data: {line}" for line in (fields.get("data") or "").split("\n")]
    return "\n".join(lines) + "\n\n"


async def event_stream(*, project_id: int, after: str, timeout: float | None) -> AsyncIterator[str]:
    """Yield the project's events strictly after stream id `after`, a comment
    at least every HEARTBEAT_SECONDS while nothing happens, and end after
    `timeout` seconds (STREAM_LIFETIME_SECONDS when None) or when Redis stops
    answering (the client then reconnects with its Last-Event-ID and loses
    nothing)."""
    key = stream_key(project_id)
    loop = asyncio.get_running_loop()
    ends_at = loop.time() + (STREAM_LIFETIME_SECONDS if timeout is None else timeout)
    client = aioredis.Redis.from_url(
        settings.MIRAGE_REDIS_URL,
        decode_responses=True,
        socket_connect_timeout=5,
        # Above the longest BLOCK, so a quiet stream is not taken for a dead socket.
        socket_timeout=HEARTBEAT_SECONDS + 10,
        client_name=f"mirage:sse:{project_id}",
    )
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n: connected\n\n"
        last_write = loop.time()
        while True:
            now = loop.time()
            if now >= ends_at:
                return
            wait = min(last_write + HEARTBEAT_SECONDS, ends_at) - now
            reply = []
            if wait > 0:
                # BLOCK 0 would mean "forever": never ask for less than 1 ms.
                reply = await client.xread({key: after}, count=READ_BATCH, block=max(1, int(wait * 1000)))
            if reply:
                for entry_id, fields in reply[0][1]:
                    after = entry_id
                    yield format_event(entry_id, fields)
                last_write = loop.time()
            elif loop.time() >= last_write + HEARTBEAT_SECONDS:
                yield ": keepalive\n\n"
                last_write = loop.time()
    except redis.RedisError as exc:
        logger.warning("event stream of project %s ended: %s", project_id, exc)
    finally:
        await client.aclose()


class ServiceUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "Live events are unavailable (Redis does not answer)."
    default_code = "service_unavailable"


def _latest_id(project_id: int) -> str:
    """The id of the project's newest event, so that a stream "from now" misses
    nothing published between this call and its first read (XREAD's `$`
    would, on every read after the first)."""
    try:
        newest = job_events.client().xrevrange(stream_key(project_id), count=1)
    except redis.RedisError as exc:
        raise ServiceUnavailable() from exc
    return newest[0][0] if newest else FROM_START


class ProjectEventsApi(APIView):
    # HEAD would open a stream whose body nobody reads.
    http_method_names = ["get", "options"]
    # Errors are JSON whatever the client accepts: an EventSource sends
    # `Accept: text/event-stream`, which no DRF renderer offers.
    renderer_classes = [JSONRenderer]

    @classmethod
    def as_view(cls, **initkwargs):
        """DRF's dispatch is synchronous: run it in a thread for the checks, and
        hand its streaming response back to the event loop."""
        drf_view = super().as_view(**initkwargs)

        async def view(request, *args, **kwargs):
            return await sync_to_async(drf_view)(request, *args, **kwargs)

        # What URL resolution and schema generation look for on a DRF view.
        view.cls = cls
        view.initkwargs = initkwargs
        view.csrf_exempt = True
        return view

    def perform_content_negotiation(self, request, force=False):
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="events_stream",
        summary="Live events of a project (Server-Sent Events)",
        description=(
            "A `text/event-stream` of the project's `document.status` and `job.progress` events, each "
            "`id: <stream id>`, `event: <name>`, `data: <JSON>` (the same fields as the document and job "
            "resources carry). A comment (`: keepalive`) is sent every 15 s while nothing happens.\n\n"
            "Where the stream starts: strictly after the `Last-Event-ID` header (sent by browsers on "
            "reconnect), else after `last_event_id`, else at the oldest kept event with `from=start`, "
            "else with the next event published (`from=now`, the default)."
        ),
        parameters=[
            OpenApiParameter("project", int, required=True, description="Id of a project of the caller."),
            OpenApiParameter("from", str, enum=["start", "now"], description="Default `now`."),
            OpenApiParameter("last_event_id", str, description="Resume after this event id (header fallback)."),
            OpenApiParameter(
                "timeout",
                float,
                description=(
                    f"End the stream after this many seconds (at most {MAX_TIMEOUT_SECONDS}). Without it the "
                    f"stream ends after {STREAM_LIFETIME_SECONDS} s, and clients reconnect with Last-Event-ID."
                ),
            ),
            OpenApiParameter(
                "Last-Event-ID", str, location=OpenApiParameter.HEADER, description="Resume after this event id."
            ),
        ],
        responses={
            (200, "text/event-stream"): OpenApiResponse(
                # One event as an SSE client reads it: how Open API tools read
                # an event stream's schema (3.2's `itemSchema`, schemathesis).
                response={
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "description": "Stream entry id; resume after it with Last-Event-ID."},
                        "event": {"type": "string", "enum": ["document.status", "job.progress"]},
                        "data": {"type": "string", "description": "A JSON object: the document's or the job's fields."},
                    },
                    "required": ["id", "event", "data"],
                },
                description="The event stream.",
                examples=[
                    OpenApiExample(
                        "A document becoming ready",
                        value=(
                            "id: 1732270000000-0\nevent: document.status\n"
                            'data: {"id": 7, "project_id": 3, "filename": "guide.md", "status": "ready", '
                            '"error_message": "", "generation": 1, "current_job_id": 12}\n\n'
                            ": keepalive\n\n"
                        ),
                    )
                ],
            ),
            400: OpenApiResponse(description="Missing or invalid `project`, `from`, `timeout` or event id."),
            401: OpenApiResponse(description="No or invalid credentials."),
            404: OpenApiResponse(description="No such project, or the caller is not a member."),
            503: OpenApiResponse(description="Redis does not answer."),
        },
    )
    def get(self, request):
        params = validate_query(EventsQuerySerializer, request)
        project = get_object_or_404(selectors.projects_for_user(request.user), id=params["project"])
        header_id = request.headers.get("Last-Event-ID", "").strip()
        if header_id and not STREAM_ID.match(header_id):
            raise exceptions.ValidationError(
                {"Last-Event-ID": ["Not an event id (expected <milliseconds>-<sequence>)."]}
            )
        # A reconnecting browser repeats the original URL (`from=start`
        # included) and adds the header: the header wins.
        if header_id or params.get("last_event_id"):
            after = header_id or params["last_event_id"]
        elif params.get("from") == "start":
            after = FROM_START
        else:
            after = _latest_id(project.id)
        # The stream may stay open for an hour; this thread's database
        # connection must not stay open with it. (Inside an atomic block,
        # only possible in tests, closing would doom the transaction.)
        for connection in connections.all(initialized_only=True):
            if not connection.in_atomic_block:
                connection.close()
        response = StreamingHttpResponse(
            event_stream(project_id=project.id, after=after, timeout=params.get("timeout")),
            content_type="text/event-stream",
        )
        response["Cache-Control"] = "no-cache"
        # nginx would otherwise buffer the stream.
        response["X-Accel-Buffering"] = "no"
        return response


urlpatterns = [path("", ProjectEventsApi.as_view(), name="events")]
