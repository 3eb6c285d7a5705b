"""/livez, /readyz, /metrics and the admin's System page and banner."""

import re

import pytest
from rest_framework.test import APIClient

from documents.monitoring import recording
from tests.monitoring.conftest import staff_client
from tests.support.factories import make_project, markdown_document, submit_bytes

pytestmark = pytest.mark.django_db

REQUIRED_METRICS = [
    "mirage_queue_depth",
    "mirage_queue_oldest_age_seconds",
    "mirage_queue_consumers",
    "mirage_documents",
    "mirage_chunks",
    "mirage_chunks_embedded_total",
    "mirage_embed_seconds",
    "mirage_provider_errors_total",
    "mirage_reconciler_repairs_total",
    "mirage_reconciler_last_success_timestamp_seconds",
    "mirage_beat_last_tick_timestamp_seconds",
    # django-prometheus: HTTP and database
    "django_http_requests_total_by_method_total",
    "django_http_requests_latency_seconds_by_view_method",
    "django_db_execute_total",
    "django_db_query_duration_seconds",
]
# Bounded label sets only: no project, document or user.
ALLOWED_LABELS = {"queue", "status", "provider", "kind", "reconciler", "outcome", "le"}


def test_livez_and_readyz_answer_without_credentials_or_details(client):
    for path, body in (("/livez", "ok\n"), ("/readyz", "ready\n")):
        response = client.get(path)
        assert response.status_code == 200
        assert response.content.decode() == body


def test_readyz_is_503_while_the_broker_does_not_answer(client, settings):
    settings.MIRAGE_REDIS_URL = "redis://127.0.0.1:1/0"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.content.decode() == "not ready\n"


def test_healthz_still_needs_credentials():
    assert APIClient().get("/healthz").status_code == 401


def test_metrics_need_the_bearer_token_when_one_is_set(client, settings, monitoring_redis):
    settings.MIRAGE_METRICS_TOKEN = "s3cret"
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Token s3cret").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")


def test_metrics_expose_every_named_series_with_low_cardinality_labels(client, settings, monitoring_redis):
    settings.MIRAGE_METRICS_TOKEN = ""
    submit_bytes(make_project(), markdown_document(), "pending.md")
    recording.beat_record_tick(now=1_700_000_000.0)
    recording.reconciler_record_success(
        reconciler="redispatch_stuck_chunks", duration=0.2, repairs=3, now=1_700_000_001.0
    )
    recording.chunks_record_embedded(count=5)
    recording.embed_record_call(provider="hash", seconds=0.03, texts=2, error=None)
    recording.embed_record_call(provider="hash", seconds=0.2, texts=2, error=TimeoutError())
    client.get("/livez")  # an HTTP request for django-prometheus to count

    text = client.get("/metrics").content.decode()

    for name in REQUIRED_METRICS:
        assert re.search(rf"^{name}(_bucket|_count|_sum)?({{| )", text, re.M), name
    assert 'mirage_queue_depth{queue="embed"} 0.0' in text
    assert 'mirage_documents{status="pending"} 1.0' in text
    assert 'mirage_chunks{status="ready"} 0.0' in text
    assert "mirage_beat_last_tick_timestamp_seconds 1.7e+09" in text
    assert 'mirage_reconciler_repairs_total{reconciler="redispatch_stuck_chunks"} 3.0' in text
    assert "mirage_chunks_embedded_total 5.0" in text
    assert 'mirage_embed_seconds_bucket{le="0.05",provider="hash"} 1.0' in text
    assert 'mirage_embed_seconds_count{provider="hash"} 2.0' in text
    assert 'mirage_provider_errors_total{kind="unexpected",provider="hash"} 1.0' in text
    for labels in re.findall(r"^mirage_\w+\{([^}]*)\}", text, re.M):
        assert {pair.split("=")[0] for pair in labels.split(",")} <= ALLOWED_LABELS, labels


def test_every_admin_page_shows_why_the_platform_is_degraded(client, django_user_model, monitoring_redis):
    admin = staff_client(client, django_user_model)
    for path in ("/admin/", "/admin/documents/document/", "/admin/jobs/job/", "/admin/system/"):
        page = admin.get(path)
        assert page.status_code == 200, path
        assert 'id="mirage-degraded"' in page.content.decode(), path
        assert "beat has never ticked" in page.content.decode(), path
        assert 'href="/admin/system/"' in page.content.decode(), path


def test_the_system_page_shows_queues_workers_beat_reconcilers_throughput_and_alerts(
    client, django_user_model, monitoring_redis
):
    recording.beat_record_tick()
    recording.reconciler_record_success(reconciler="finalize_settled_documents", duration=0.05, repairs=2)
    page = staff_client(client, django_user_model).get("/admin/system/").content.decode()
    for section in (
        "system-queues",
        "system-workers",
        "system-beat",
        "system-reconcilers",
        "system-throughput",
        "system-alerts",
    ):
        assert f'id="{section}"' in page
    for queue in ("ingest", "embed", "maintenance"):
        assert f"<td>{queue}</td>" in page
    assert "finalize_settled_documents" in page and "MirageQueueWithoutConsumer" in page


def test_the_system_page_is_for_staff_only(client, django_user_model):
    user = django_user_model.objects.create_user("member", password="pw")
    client.force_login(user)
    assert client.get("/admin/system/").status_code == 302
