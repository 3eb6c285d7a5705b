"""Live events for clients (Server-Sent Events) and the admin.

Each project has its own Redis stream, so a reader can only ever see the
events of the projects it asks for, and a reconnecting client resumes from
its `Last-Event-ID` (the stream entry id). Publishing is best effort: a
broker outage must never fail the state change that produced the event.
"""
from __future__ import annotations

import json
import logging
from functools import lru_cache

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

STREAM_MAX_LENGTH = 10_000


def stream_key(project_id: int) -> str:
    return f"mirage:events:project:{project_id}"


@lru_cache(maxsize=1)
def client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.MIRAGE_REDIS_URL, socket_connect_timeout=0.5, socket_timeout=2, decode_responses=True
    )


def publish(*, project_id: int | None, event: str, data: dict) -> None:
    if project_id is None:
        return
    try:
        client().xadd(
            stream_key(project_id),
            {"event": event, "data": json.dumps(data, default=str)},
            maxlen=STREAM_MAX_LENGTH,
            approximate=True,
        )
    except redis.RedisError as exc:
        logger.warning("event %s for project %s not published: %s", event, project_id, exc)
