"""GET /healthz: can this deployment do work? Database, Redis, workers."""
from __future__ import annotations

import threading
import time

import redis
from django.conf import settings
from django.db import connection
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import error_responses


def _database() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"ok": False, "error": str(exc)[:200]}


def _redis() -> dict:
    try:
        redis.Redis.from_url(settings.MIRAGE_REDIS_URL, socket_connect_timeout=1, socket_timeout=1).ping()
        return {"ok": True}
    except redis.RedisError as exc:
        return {"ok": False, "error": str(exc)[:200]}


# One broadcast ping at a time, its answer shared for a moment: concurrent
# pings each hold a broker pool connection while waiting for another, and
# enough of them at once exhaust the pool and hang every caller.
_PING_LOCK = threading.Lock()
_PING_CACHE_SECONDS = 2.0
_last_ping: tuple[float, dict] | None = None


def _workers() -> dict:
    global _last_ping
    with _PING_LOCK:
        if _last_ping is not None and time.monotonic() - _last_ping[0] < _PING_CACHE_SECONDS:
            return _last_ping[1]
        _last_ping = (time.monotonic(), _ping_workers())
        return _last_ping[1]


def _ping_workers() -> dict:
    from mirage.celery import app

    try:
        replies = app.control.ping(timeout=0.5)
    except Exception as exc:  # noqa: BLE001
        return {"ok": False, "count": 0, "error": str(exc)[:200]}
    names = sorted(name for reply in replies for name in reply)
    return {"ok": bool(names), "count": len(names), "names": names}


HEALTH = inline_serializer(
    "Health",
    {"status": serializers.CharField(), "database": serializers.DictField(),
     "redis": serializers.DictField(), "workers": serializers.DictField()},
)


class HealthApi(APIView):
    @extend_schema(
        responses={
            200: HEALTH,
            503: OpenApiResponse(HEALTH, description="Degraded: the checks that failed say why."),
            **error_responses(401),
        }
    )
    def get(self, request):
        checks = {"database": _database(), "redis": _redis()}
        checks["workers"] = _workers() if checks["redis"]["ok"] else {"ok": False, "count": 0}
        healthy = all(check["ok"] for check in checks.values())
        return Response({"status": "ok" if healthy else "degraded", **checks}, status=200 if healthy else 503)
