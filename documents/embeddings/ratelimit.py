"""A request budget shared by every worker through Redis, so that N worker
processes together stay under a provider's requests-per-minute limit."""

from __future__ import annotations

import random
import time
import uuid

import redis

from .base import TransientEmbeddingError

# A sliding-window log: one sorted-set member per granted request, scored by
# the Redis server's clock in microseconds. The server's clock rather than
# each worker's, so that workers on hosts with skewed clocks still agree.
# Returns 0 when a slot was taken, else the microseconds until the oldest
# request leaves the window.
_ACQUIRE = """
local key = KEYS[1]
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local member = ARGV[3]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
if redis.call('ZCARD', key) < limit then
    redis.call('ZADD', key, now, member)
    redis.call('PEXPIRE', key, math.ceil(window / 1000) + 1000)
    return 0
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
local wait = tonumber(oldest[2]) + window - now
if wait < 1 then
    wait = 1
end
return wait
"""

# Upper bound on one sleep while waiting, so a waiter notices a freed slot
# soon even when its estimate was long.
_MAX_SLEEP_SECONDS = 1.0
# Spreads waiters that were told the same wait, so they do not all hit Redis
# in the same millisecond.
_SLEEP_JITTER_SECONDS = 0.02


class RequestBudget:
    """At most `requests_per_minute` requests in any window of
    `window_seconds` (60 unless a test shortens it), counted across every
    process that uses the same Redis `key`. `requests_per_minute` 0 means
    unlimited and never touches Redis.

    The check-and-take runs as one Lua script, so two workers cannot both
    take the last slot.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        key: str,
        requests_per_minute: int,
        *,
        window_seconds: float = 60.0,
    ) -> None:
        if requests_per_minute < 0:
            raise ValueError("requests_per_minute must be 0 (unlimited) or more")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.key = key
        self.requests_per_minute = requests_per_minute
        self.window_seconds = window_seconds
        self._script = redis_client.register_script(_ACQUIRE)

    def acquire(self, timeout: float) -> bool:
        """Take one request slot, waiting up to `timeout` seconds for one to
        free up. True when a slot was taken, False when none freed in time.
        Raises TransientEmbeddingError when Redis cannot be reached."""
        if self.requests_per_minute == 0:
            return True
        deadline = time.monotonic() + max(0.0, timeout)
        window_us = max(1, round(self.window_seconds * 1_000_000))
        member = uuid.uuid4().hex
        while True:
            try:
                wait_us = int(
                    self._script(
                        keys=[self.key],
                        args=[self.requests_per_minute, window_us, member],
                    )
                )
            except redis.RedisError as exc:
                raise TransientEmbeddingError(f"request budget unavailable: {exc}") from exc
            if wait_us == 0:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(
                min(
                    wait_us / 1_000_000 + random.uniform(0.0, _SLEEP_JITTER_SECONDS),
                    remaining,
                    _MAX_SLEEP_SECONDS,
                )
            )
