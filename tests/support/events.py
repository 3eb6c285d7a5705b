"""What a project's live event stream holds, read straight from Redis."""

from __future__ import annotations

import json

import redis
from django.conf import settings

from common.events import stream_key


def stream(project_id: int) -> list[tuple[str, dict]]:
    """Every (event, data) on the project's stream, oldest first."""
    client = redis.Redis.from_url(settings.MIRAGE_REDIS_URL, decode_responses=True)
    return [(fields["event"], json.loads(fields["data"])) for _, fields in client.xrange(stream_key(project_id))]
