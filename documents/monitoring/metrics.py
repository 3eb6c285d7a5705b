"""GET /metrics: Prometheus text format through prometheus_client.

The web process's own HTTP and database figures come from django-prometheus.
Everything about the workers and beat is read when Prometheus scrapes, by
one collector:

- gauges (queue depth, oldest age, consumers, documents and chunks by
  status, beat's last tick, reconcilers' last success) are read from Redis,
  the broker and PostgreSQL at scrape time: they are facts about shared
  state, true whichever process answers the scrape;
- counters (chunks embedded, provider calls and errors, reconciler repairs)
  are kept in Redis by the processes that produce them
  (documents/monitoring/recording.py). prometheus_client's multiprocess mode would
  need every producing process on the scraped machine sharing one
  directory; Mirage's embed workers run on other machines.

Labels are few and bounded (queue, status, provider, kind, reconciler): no
project, document or user.
"""

from __future__ import annotations

import hmac
import logging

import redis
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from documents.monitoring import queues, store
from documents.monitoring.recording import EMBED_SECONDS_BUCKETS
from documents.monitoring.report import beat_state, reconciler_states

logger = logging.getLogger(__name__)


class MirageCollector:
    """Reads the shared state at every scrape (see the module docstring)."""

    def describe(self):
        # Nothing to check for name clashes up front; collect() is live.
        return []

    def collect(self):
        import time

        now = time.time()
        try:
            yield from self._queues(now)
            yield from self._beat_and_reconcilers(now)
            yield from self._counters()
        except redis.RedisError as exc:
            logger.warning("metrics: Redis does not answer: %s", exc)
        try:
            yield from self._statuses()
        except DatabaseError as exc:
            logger.warning("metrics: the database does not answer: %s", exc)

    def _queues(self, now: float):
        stats = queues.queue_stats(now=now)
        workers = queues.workers_snapshot()
        depth = GaugeMetricFamily("mirage_queue_depth", "Messages waiting in the queue.", labels=["queue"])
        oldest = GaugeMetricFamily(
            "mirage_queue_oldest_age_seconds",
            "Seconds the oldest waiting message has waited (0 when empty).",
            labels=["queue"],
        )
        consumers = GaugeMetricFamily(
            "mirage_queue_consumers", "Running workers consuming the queue.", labels=["queue"]
        )
        for queue, figures in stats.items():
            depth.add_metric([queue], figures["depth"])
            oldest.add_metric([queue], figures["oldest_age_seconds"] or 0.0)
            if "error" not in workers:
                consumers.add_metric([queue], len(workers["queues"].get(queue, [])))
        yield depth
        yield oldest
        yield consumers
        if "error" not in workers:
            yield GaugeMetricFamily("mirage_workers", "Workers answering the broadcast.", value=workers["count"])

    def _beat_and_reconcilers(self, now: float):
        beat = beat_state(now=now)
        if beat["last_tick_timestamp"] is not None:
            yield GaugeMetricFamily(
                "mirage_beat_last_tick_timestamp_seconds",
                "When beat last sent the periodic reconcilers (Unix time).",
                value=beat["last_tick_timestamp"],
            )
        last_success = GaugeMetricFamily(
            "mirage_reconciler_last_success_timestamp_seconds",
            "When the reconciler last finished without error (Unix time).",
            labels=["reconciler"],
        )
        duration = GaugeMetricFamily(
            "mirage_reconciler_last_duration_seconds",
            "How long the reconciler's last successful run took.",
            labels=["reconciler"],
        )
        repairs = CounterMetricFamily(
            "mirage_reconciler_repairs", "Repairs made by the reconciler.", labels=["reconciler"]
        )
        runs = CounterMetricFamily(
            "mirage_reconciler_runs", "Reconciler runs by outcome.", labels=["reconciler", "outcome"]
        )
        for name, state in reconciler_states(now=now).items():
            if state["last_success_timestamp"] is not None:
                last_success.add_metric([name], state["last_success_timestamp"])
                duration.add_metric([name], state["last_duration_seconds"] or 0.0)
            repairs.add_metric([name], state["repairs_total"])
            runs.add_metric([name, "success"], state["runs_succeeded"])
            runs.add_metric([name, "failure"], state["runs_failed"])
        yield from (last_success, duration, repairs, runs)

    def _counters(self):
        client = store.client()
        counters = {key.decode(): int(value) for key, value in client.hgetall(store.key("counters")).items()}
        yield CounterMetricFamily(
            "mirage_chunks_embedded", "Chunks that received a vector.", value=counters.get("chunks_embedded", 0)
        )
        errors = CounterMetricFamily(
            "mirage_provider_errors", "Failed embedding provider calls.", labels=["provider", "kind"]
        )
        for field, count in sorted(counters.items()):
            if field.startswith("provider_errors|"):
                _, provider, kind = field.split("|", 2)
                errors.add_metric([provider, kind], count)
        yield errors
        histogram = HistogramMetricFamily(
            "mirage_embed_seconds", "Duration of embedding provider calls.", labels=["provider"]
        )
        prefix = store.key("embed_seconds", "")
        for key in sorted(client.scan_iter(match=prefix + "*", count=100)):
            provider = key.decode()[len(prefix) :]
            fields = {name.decode(): value for name, value in client.hgetall(key).items()}
            cumulative, buckets = 0, []
            for bound in EMBED_SECONDS_BUCKETS:
                cumulative += int(fields.get(str(bound), 0))
                buckets.append((str(bound), cumulative))
            buckets.append(("+Inf", int(fields.get("count", 0))))
            histogram.add_metric([provider], buckets, sum_value=float(fields.get("sum", 0.0)))
        yield histogram

    def _statuses(self):
        from documents.models import Chunk, Document

        for name, model, text in (
            ("mirage_documents", Document, "Documents by status."),
            ("mirage_chunks", Chunk, "Chunks by status."),
        ):
            counts = dict(model.objects.order_by().values_list("status").annotate(n=Count("id")))
            family = GaugeMetricFamily(name, text, labels=["status"])
            for status in model.Status.values:
                family.add_metric([status], counts.get(status, 0))
            yield family


_collector: MirageCollector | None = None


def register_collector() -> None:
    global _collector
    if _collector is None:
        _collector = MirageCollector()
        REGISTRY.register(_collector)


def _authorized(request: HttpRequest) -> bool:
    token = settings.MIRAGE_METRICS_TOKEN
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def metrics_view(request: HttpRequest) -> HttpResponse:
    if not _authorized(request):
        response = HttpResponse(
            "GET /metrics needs Authorization: Bearer <MIRAGE_METRICS_TOKEN>\n",
            status=401,
            content_type="text/plain; charset=utf-8",
        )
        response["WWW-Authenticate"] = 'Bearer realm="mirage-metrics"'
        return response
    return HttpResponse(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
