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


def redis_key(*parts) -> str:
    """A key of this deployment's own (MIRAGE_REDIS_PREFIX + the parts)."""
    return settings.MIRAGE_REDIS_PREFIX + ":".join(str(part) for part in parts)


def stream_key(project_id: int) -> str:
    return redis_key("events", "project", project_id)


@lru_cache(maxsize=1)
def client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.MIRAGE_REDIS_URL, socket_connect_timeout=0.5, socket_timeout=2, decode_responses=True
    )


# Publishes an event only if its rank is above the last one published under
# the same key, in one step on the Redis server: two processes publishing
# progress of the same job in the opposite order of their reads cannot make
# it go backwards on the stream.
_PUBLISH_IF_HIGHER = """
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[4], 'data', ARGV[5])
return 1
"""
RANK_TTL_SECONDS = 7 * 24 * 3600
# Once what a key ranks has ended (a finished job or run), its rank is kept
# only this long: long enough to drop any late, older event, and nothing is
# left in Redis per finished job or document after it.
FINISHED_RANK_TTL_SECONDS = 600


def rank_key(key: str) -> str:
    return redis_key("rank", key)


def publish_monotonic(
    *, project_id: int | None, event: str, data: dict, key: str, rank: int, ttl: int = RANK_TTL_SECONDS
) -> None:
    """Publish unless an event with the same `key` and a rank at least as
    high was already published (progress never goes backwards, a final
    status is never followed by an earlier one). The rank is kept `ttl`
    seconds."""
    if project_id is None:
        return
    try:
        client().eval(
            _PUBLISH_IF_HIGHER,
            2,
            rank_key(key),
            stream_key(project_id),
            rank,
            ttl,
            STREAM_MAX_LENGTH,
            event,
            json.dumps(data, default=str),
        )
    except redis.RedisError as exc:
        logger.warning("event %s for project %s not published: %s", event, project_id, exc)


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
