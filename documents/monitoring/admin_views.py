"""The admin's System page: queues, workers, beat, reconcilers, throughput
and which alert conditions hold now. Mounted in mirage/urls.py behind
`admin.site.admin_view` (staff only)."""

from __future__ import annotations

from datetime import timedelta

import redis
from django.contrib import admin
from django.db.models import Count
from django.http import HttpRequest
from django.template.response import TemplateResponse
from django.utils import timezone

from documents.monitoring.recording import chunks_embedded_recently
from documents.monitoring.report import system_report

THROUGHPUT_MINUTES = 5


def alert_conditions(report: dict) -> list[dict]:
    """The conditions of docs/alerts.yml that this process can judge from
    the report; the rate-based ones need Prometheus."""
    queues = report.get("queues", {})
    reconcilers = report.get("reconcilers", {})
    late = [reason for reason in report["reasons"] if reason.startswith("reconciler ")]
    return [
        {
            "alert": "MirageQueueWithoutConsumer",
            "holds": any(not queue["consumers"] for queue in queues.values()) if queues else None,
            "detail": ", ".join(name for name, queue in queues.items() if not queue["consumers"]),
        },
        {"alert": "MirageBeatSilent", "holds": not report.get("beat", {}).get("ok", False), "detail": ""},
        {
            "alert": "MirageQueueMessageTooOld",
            "holds": any(reason.startswith("oldest ") for reason in report["reasons"]),
            "detail": "",
        },
        {
            "alert": "MirageReconcilerNotSucceeding",
            "holds": bool(late) if reconcilers else None,
            "detail": "; ".join(late),
        },
        {"alert": "MirageProviderErrors", "holds": None, "detail": "a rate: evaluated by Prometheus"},
        {"alert": "MirageDocumentsEndingError", "holds": None, "detail": "a rate: evaluated by Prometheus"},
    ]


def throughput() -> dict:
    from documents.models import Document

    since = timezone.now() - timedelta(hours=1)
    try:
        embedded = chunks_embedded_recently(minutes=THROUGHPUT_MINUTES)
    except redis.RedisError:
        embedded = None
    finished = dict(
        Document.objects.filter(indexed_at__gte=since).order_by().values_list("status").annotate(n=Count("id"))
    )
    return {
        "minutes": THROUGHPUT_MINUTES,
        "chunks_embedded": embedded,
        "chunks_per_minute": round(embedded / THROUGHPUT_MINUTES, 1) if embedded is not None else None,
        "documents_indexed_last_hour": finished,
        "documents_failed_last_hour": Document.objects.filter(
            status=Document.Status.ERROR, updated_at__gte=since
        ).count(),
    }


def system_page(request: HttpRequest) -> TemplateResponse:
    report = system_report()
    context = {
        **admin.site.each_context(request),
        "title": "System",
        "report": report,
        "conditions": alert_conditions(report),
        "throughput": throughput(),
    }
    return TemplateResponse(request, "monitoring/system.html", context)
