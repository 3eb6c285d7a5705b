"""A real Prometheus server (Debian's `prometheus`) on a free loopback port
scrapes a running Mirage with its bearer token, loads docs/alerts.yml, and
answers a PromQL query for the embed queue's depth."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
import yaml
from celery import Celery
from django.conf import settings

from tests.support.processes import Stack, free_port
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus not found: `make prometheus` installs it (Debian package `prometheus`)",
    ),
]

TOKEN = "a-test-metrics-token"
QUEUED = 3


@pytest.fixture
def stack(transactional_db, tmp_path):
    stack = Stack(tmp_path / "stack", MIRAGE_METRICS_TOKEN=TOKEN)
    stack.start_redis()
    yield stack
    stack.stop_all()


def query(prometheus: str, promql: str) -> list[dict]:
    try:
        response = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
    except httpx.HTTPError:
        return []
    if response.status_code != 200:
        return []
    return response.json()["data"]["result"]


def test_prometheus_scrapes_mirage_and_answers_the_embed_queue_depth(stack, tmp_path):
    base_url = stack.start_web()
    # Embed messages nobody consumes: no worker runs in this test.
    producer = Celery(broker=stack.redis_url, set_as_current=False)
    # Into this deployment's queue: its Redis prefix applies to every queue.
    producer.conf.broker_transport_options = {"global_keyprefix": stack.redis_prefix}
    try:
        for chunk_id in range(QUEUED):
            producer.send_task("documents.embed_chunk", args=[chunk_id], queue="embed")
    finally:
        producer.close()

    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(Path(settings.BASE_DIR) / "docs" / "alerts.yml")],
                "scrape_configs": [
                    {
                        "job_name": "mirage",
                        "authorization": {"type": "Bearer", "credentials": TOKEN},
                        "static_configs": [{"targets": [base_url.removeprefix("http://")]}],
                    }
                ],
            }
        )
    )
    stack.spawn(
        "prometheus",
        [
            shutil.which("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
    )
    prometheus = f"http://127.0.0.1:{port}"

    result = wait_until(
        lambda: query(prometheus, 'mirage_queue_depth{queue="embed"}'),
        timeout=120,
        interval=0.5,
        message=f"Prometheus has scraped the embed queue's depth\n{stack.log('prometheus')[-2000:]}",
    )
    assert float(result[0]["value"][1]) == QUEUED
    assert result[0]["metric"]["job"] == "mirage"
    assert float(query(prometheus, 'up{job="mirage"}')[0]["value"][1]) == 1
    assert float(query(prometheus, 'mirage_queue_consumers{queue="embed"}')[0]["value"][1]) == 0
    assert query(prometheus, 'mirage_queue_oldest_age_seconds{queue="embed"} > 0')
    rules = httpx.get(f"{prometheus}/api/v1/rules", timeout=5).json()["data"]["groups"][0]["rules"]
    assert {rule["name"] for rule in rules} >= {"MirageQueueWithoutConsumer", "MirageBeatSilent"}
