"""docs/grafana-dashboard.json is a dashboard on series /metrics exports."""

import json
import re
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db

DASHBOARD = Path(settings.BASE_DIR) / "docs" / "grafana-dashboard.json"


def exported_series(client, monitoring_redis) -> set[str]:
    from documents.monitoring import recording

    # Every series appears once something happened.
    recording.beat_record_tick()
    recording.reconciler_record_success(reconciler="admit_pending_jobs", duration=0.1, repairs=1)
    recording.embed_record_call(provider="hash", seconds=0.1, texts=1, error=TimeoutError())
    client.get("/livez")
    text = client.get("/metrics").content.decode()
    return set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", text, re.M))


def test_every_panel_queries_series_that_metrics_exports(client, settings, monitoring_redis):
    settings.MIRAGE_METRICS_TOKEN = ""
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_series(client, monitoring_redis)
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    used = set()
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\b((?:mirage|django)_\w+)", target["expr"]))
    assert used - exported == set()
    # The series all have a panel.
    assert {
        "mirage_queue_depth",
        "mirage_queue_oldest_age_seconds",
        "mirage_queue_consumers",
        "mirage_beat_last_tick_timestamp_seconds",
        "mirage_reconciler_last_success_timestamp_seconds",
        "mirage_reconciler_repairs_total",
        "mirage_chunks_embedded_total",
        "mirage_embed_seconds_bucket",
        "mirage_provider_errors_total",
        "mirage_documents",
        "mirage_chunks",
    } <= used
