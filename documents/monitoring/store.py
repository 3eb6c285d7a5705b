"""Where the platform's figures about itself live in Redis.

Every key name is made here, under the deployment's MIRAGE_REDIS_PREFIX (as
are the broker's own queue lists, through Celery's `global_keyprefix`).
"""

from __future__ import annotations

import os
import threading

import redis
from django.conf import settings

# The Redis transport keeps a queue's messages of priority 0 in a list named
# after the queue and those of higher priorities in lists suffixed with this
# separator and the priority step (kombu.transport.redis.Channel._q_for_pri).
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)


def key(*parts: str) -> str:
    """The Redis key of one monitoring record, e.g. key("reconciler", name)."""
    return settings.MIRAGE_REDIS_PREFIX + ":".join(("monitoring", *parts))


def queue_keys(queue: str) -> list[str]:
    """The broker's Redis lists holding `queue`'s waiting messages, the
    default-priority list first."""
    queue = settings.MIRAGE_REDIS_PREFIX + queue
    return [queue, *(f"{queue}{_PRIORITY_SEPARATOR}{step}" for step in _PRIORITY_STEPS)]


_local = threading.local()


def client() -> redis.Redis:
    """A Redis client with short timeouts, one per thread and process: a
    monitoring read or write must never hold up the work it describes."""
    cached = getattr(_local, "client", None)
    if cached is None or cached[0] != os.getpid() or cached[1] != settings.MIRAGE_REDIS_URL:
        connection = redis.Redis.from_url(
            settings.MIRAGE_REDIS_URL, socket_connect_timeout=1, socket_timeout=2, health_check_interval=30
        )
        _local.client = cached = (os.getpid(), settings.MIRAGE_REDIS_URL, connection)
    return cached[2]
