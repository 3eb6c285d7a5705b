"""Health endpoints.

- GET /healthz (authenticated): the platform's report on itself
  (documents/monitoring/report.py), 503 with its reasons in words when degraded.
- GET /livez (open, no details): the web process answers.
- GET /readyz (open, no details): the database and the broker answer.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from common.api import error_responses
from documents.monitoring.report import database_check, redis_check, system_report

HEALTH = inline_serializer(
    "Health",
    {
        "status": serializers.ChoiceField(choices=["ok", "degraded"]),
        "reasons": serializers.ListField(
            child=serializers.CharField(), help_text="Each fault in words; empty when healthy."
        ),
        "database": serializers.DictField(),
        "redis": serializers.DictField(),
        "workers": serializers.DictField(),
        "queues": serializers.DictField(
            help_text="Per queue: consumers (worker names for staff, a count for others), depth, oldest_age_seconds."
        ),
        "beat": serializers.DictField(help_text="last_tick_at, seconds_since_last_tick, ok."),
        "reconcilers": serializers.DictField(
            help_text="Per reconciler: last_success_at, last_duration_seconds, last_repairs, repairs_total, ..."
        ),
    },
)


class HealthApi(APIView):
    @extend_schema(
        responses={
            200: HEALTH,
            503: OpenApiResponse(HEALTH, description="Degraded: `reasons` says what is wrong, in words."),
            **error_responses(401),
        }
    )
    def get(self, request):
        report = system_report()
        if not request.user.is_staff:
            report = without_host_names(report)
        return Response(report, status=200 if report["status"] == "ok" else 503)


def without_host_names(report: dict) -> dict:
    """The report as a non-staff client sees it: how many workers consume each
    queue, not their names (which carry host names)."""
    report = dict(report)
    workers = dict(report.get("workers", {}))
    workers.pop("names", None)
    report["workers"] = workers
    report["queues"] = {
        queue: {**stats, "consumers": len(stats.get("consumers", []))}
        for queue, stats in report.get("queues", {}).items()
    }
    return report


def livez(request: HttpRequest) -> HttpResponse:
    """The process serves requests; nothing else is checked (an orchestrator
    restarts a process that fails this, and a database outage is no reason)."""
    return HttpResponse("ok\n", content_type="text/plain")


def readyz(request: HttpRequest) -> HttpResponse:
    """The database and the broker answer: this process can take traffic."""
    ready = database_check()["ok"] and redis_check()["ok"]
    return HttpResponse("ready\n" if ready else "not ready\n", status=200 if ready else 503, content_type="text/plain")
