"""The platform tells the truth about itself, with real processes: workers
for `ingest` and `embed` only plus beat, an embed worker killed mid-run.
/healthz, the admin banner and /metrics name the missing `maintenance`
consumer; once one starts, the stranded chunks are repaired and health
comes back. Beat stopped is named too."""

from __future__ import annotations

import json
import re
import signal
import time
from collections import Counter

import httpx
import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from documents.models import Chunk, Document
from documents.monitoring import store
from tests.chaos.conftest import RECONCILE_SECONDS
from tests.chaos.test_fault_injection import RECORDING, all_final, write_documents
from tests.support import figures
from tests.support.processes import Stack, elapsed_since
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.chaos, pytest.mark.django_db(transaction=True)]

METRICS_TOKEN = "a-test-metrics-token"
LEASE_SECONDS = 3


@pytest.fixture
def stack(transactional_db, tmp_path):
    stack = Stack(
        tmp_path / "stack",
        MIRAGE_RECONCILE_INTERVAL_SECONDS=str(RECONCILE_SECONDS),
        MIRAGE_CHUNK_LEASE_SECONDS=str(LEASE_SECONDS),
        MIRAGE_DISPATCH_GRACE_SECONDS="4",
        MIRAGE_TEST_EMBED_DELAY="0.3",
        MIRAGE_METRICS_TOKEN=METRICS_TOKEN,
    )
    stack.start_redis()
    yield stack
    stack.stop_all()


class Operator:
    """An API client (token) and a staff admin session against the web process."""

    def __init__(self, base_url: str) -> None:
        user = get_user_model().objects.create_user(
            "operator", password="operator-password", is_staff=True, is_superuser=True
        )
        token = Token.objects.create(user=user)
        self.base_url = base_url
        self.api = httpx.Client(base_url=base_url, headers={"Authorization": f"Token {token.key}"}, timeout=30)
        self.admin = httpx.Client(base_url=base_url, timeout=30, follow_redirects=True)
        login = self.admin.get("/admin/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
        logged_in = self.admin.post(
            "/admin/login/?next=/admin/",
            data={"username": "operator", "password": "operator-password", "csrfmiddlewaretoken": csrf},
            headers={"Referer": f"{base_url}/admin/login/"},
        )
        assert "Log out" in logged_in.text or "logout" in logged_in.text

    def health(self) -> httpx.Response:
        return self.api.get("/healthz")

    def metrics(self) -> str:
        response = httpx.get(
            f"{self.base_url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=30
        )
        assert response.status_code == 200
        return response.text

    def close(self) -> None:
        self.api.close()
        self.admin.close()


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else None


def beat_ticks(stack: Stack, count: int) -> None:
    """Wait until beat has sent its reconcilers `count` more times."""
    key = store.key("beat", "last_tick")
    seen = {stack.redis().get(key)}
    wait_until(
        lambda: seen.add(stack.redis().get(key)) or len(seen) > count,
        timeout=60,
        interval=0.2,
        message=f"{count} beat ticks",
    )


def _now():
    from django.utils import timezone

    return timezone.now()


def test_a_missing_maintenance_consumer_is_named_and_its_work_repaired_once_one_starts(stack, tmp_path):
    base_url = stack.start_web()
    operator = Operator(base_url)
    try:
        stack.start_worker("ingest", "ingest", concurrency=1)
        stack.start_worker("embed", "embed", concurrency=2)
        stack.start_beat()

        # The worker that started says which queue nobody consumes.
        wait_until(
            lambda: "no running worker consumes queue maintenance" in stack.log("embed"),
            timeout=60,
            interval=0.3,
            message="start-up warning about queue maintenance",
        )
        assert "WARNING" in next(line for line in stack.log("embed").splitlines() if "queue maintenance" in line)

        documents = write_documents(tmp_path / "docs", count=4, sections=20)
        stack.manage("ingest", str(documents), "--project", "unrepaired", "--embedder", RECORDING)
        wait_until(
            lambda: (
                Chunk.objects.filter(status="ready").count() >= 10
                and Chunk.objects.filter(status="processing").exists()
            ),
            timeout=180,
            interval=0.05,
            message="embedding under way, chunks held by the embed worker",
        )
        stack.kill("embed", signal.SIGKILL)
        held = Chunk.objects.filter(status="processing").count()

        # The very first look after the kill names the fault: within one interval.
        first = operator.health()
        assert first.status_code == 503
        assert "no worker consumes queue maintenance: stuck work is not being repaired" in first.json()["reasons"]
        assert first.json()["queues"]["maintenance"]["consumers"] == []
        page = operator.admin.get("/admin/documents/document/")
        assert page.status_code == 200
        assert 'id="mirage-degraded"' in page.text and "no worker consumes queue maintenance" in page.text
        assert metric(operator.metrics(), "mirage_queue_consumers", queue="maintenance") == 0

        # The embed worker comes back; the chunks the dead one held stay
        # `processing` past their lease while nobody runs the reconcilers,
        # and the unconsumed reconcile messages do not pile up.
        stack.start_worker("embed", "embed", concurrency=2)
        wait_until(
            lambda: sum(stack.redis().llen(key) for key in store.queue_keys("embed")) == 0,
            timeout=180,
            interval=0.3,
            message="the queued chunks embedded",
        )
        beat_ticks(stack, 3)
        assert held > 0
        assert Chunk.objects.filter(status="processing", lease_expires_at__lt=_now()).count() == held
        assert Document.objects.filter(project__name="unrepaired", status="indexing").exists()
        # Beat sent each interval reconciler at least four times by now;
        # expired copies were removed, so at most the last two of each wait
        # (the one being replaced may not have expired yet).
        # Every priority step's list of the queue (reconcile tasks carry the
        # default priority).
        waiting = Counter(
            json.loads(raw)["headers"]["task"]
            for key in store.queue_keys("maintenance")
            for raw in stack.redis().lrange(key, 0, -1)
        )
        depth = sum(waiting.values())
        assert waiting and max(waiting.values()) <= 2, waiting
        assert "removed from queue maintenance" in stack.log("beat")

        # A maintenance consumer starts: the stranded chunks are repaired.
        consumer_started = time.monotonic()
        stack.start_worker("maintenance", "maintenance", concurrency=1)
        consumer_answering = time.monotonic()
        wait_until(lambda: all_final("unrepaired", 4), timeout=120, interval=0.2, message="every document final")
        repaired_after = elapsed_since(consumer_started)
        repaired_after_answering = elapsed_since(consumer_answering)
        assert set(Document.objects.filter(project__name="unrepaired").values_list("status", flat=True)) == {"ready"}
        healthy = wait_until(
            lambda: (response := operator.health()).status_code == 200 and response,
            timeout=60,
            interval=0.5,
            message="health back to 200",
        )
        assert healthy.json()["reasons"] == []
        repaired = healthy.json()["reconcilers"]["redispatch_stuck_chunks"]
        assert repaired["repairs_total"] >= held
        assert 'id="mirage-degraded"' not in operator.admin.get("/admin/").text
        scrape = wait_until(
            lambda: (
                (text := operator.metrics())
                and metric(text, "mirage_queue_consumers", queue="maintenance") == 1
                and text
            ),
            timeout=30,
            interval=0.5,
            message="the maintenance consumer in /metrics",
        )
        assert metric(scrape, "mirage_reconciler_repairs_total", reconciler="redispatch_stuck_chunks") >= held
        assert metric(scrape, "mirage_chunks_embedded_total") >= 4 * 20 - held
        system = operator.admin.get("/admin/system/")
        assert "redispatch_stuck_chunks" in system.text and "maintenance-" in system.text

        # Beat stops: named within two intervals.
        beat_stopped = time.monotonic()
        stack.kill("beat", signal.SIGKILL)
        silent = wait_until(
            lambda: (response := operator.health()).status_code == 503 and response,
            timeout=60,
            interval=0.2,
            message="503 naming beat",
        )
        assert any(reason.startswith("beat has not ticked for") for reason in silent.json()["reasons"])
        figures.record(
            "self-report: maintenance unconsumed, embed worker killed",
            chunks=4 * 20,
            chunks_stranded=held,
            maintenance_depth_after_3_ticks=depth,
            first_health_after_kill=first.status_code,
            seconds_from_maintenance_consumer_start_to_all_ready=repaired_after,
            seconds_from_maintenance_consumer_answering_to_all_ready=repaired_after_answering,
            seconds_from_beat_stop_to_503=elapsed_since(beat_stopped),
            beat_silent_for_at_503=silent.json()["beat"]["seconds_since_last_tick"],
        )
    finally:
        operator.close()
