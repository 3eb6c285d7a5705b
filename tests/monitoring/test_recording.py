"""What processes write down about themselves: publish times, reconciler
runs, beat ticks, expired reconcile messages, provider calls."""

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.conf import settings

from documents.embeddings.base import TransientEmbeddingError
from documents.embeddings.batching import MicroBatcher
from documents.embeddings.hashing import HashEmbedder
from documents.monitoring import queues, recording, store
from documents.monitoring.report import beat_silence_seconds, system_report
from jobs import tasks as job_tasks
from mirage.celery import app

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("result", "repairs"),
    [
        (3, 3),
        (0, 0),
        (None, 0),
        ([1, 2], 2),
        ({"lease_expired": 2, "pending_lost": 1, "gave_up": 0}, 3),
        ({}, 0),
        (True, 0),
    ],
)
def test_repairs_are_read_from_what_a_reconciler_returns(result, repairs):
    assert recording.repairs_in(result) == repairs


def test_a_reconciler_run_records_its_success_duration_and_repairs(monitoring_redis):
    job_tasks.admit_pending_jobs.apply()
    job_tasks.admit_pending_jobs.apply()

    state = system_report()["reconcilers"]["admit_pending_jobs"]
    assert state["runs_succeeded"] == 2
    assert state["last_repairs"] == 0 and state["repairs_total"] == 0
    assert state["last_duration_seconds"] is not None and state["last_duration_seconds"] >= 0
    assert state["seconds_since_success"] is not None and state["seconds_since_success"] < 60
    assert state["last_error"] is None


def test_a_failed_reconciler_run_is_named_in_the_report(monitoring_redis):
    recording.reconciler_record_success(reconciler="purge_finished_jobs", duration=0.1, repairs=4, now=time.time() - 5)
    recording.reconciler_record_failure(reconciler="purge_finished_jobs", error="OperationalError: gone")

    report = system_report()
    assert report["reconcilers"]["purge_finished_jobs"]["repairs_total"] == 4
    assert "reconciler purge_finished_jobs failed its last run: OperationalError: gone" in report["reasons"]
    assert report["status"] == "degraded"


def test_every_published_task_carries_its_publish_time_and_the_queue_reports_its_age(test_queue):
    before = time.time()
    app.send_task("reconcile.admit_pending_jobs", queue=test_queue)
    app.send_task("reconcile.admit_pending_jobs", queue=test_queue)

    # Unmarked tasks carry the normal priority: their list is the queue's
    # list for that priority step.
    holding = [key for key in store.queue_keys(test_queue) if store.client().llen(key)]
    assert len(holding) == 1
    oldest = json.loads(store.client().lindex(holding[0], -1))
    assert before <= oldest["headers"][recording.PUBLISHED_AT_HEADER] <= time.time()
    stats = queues.queue_stats(now=before + 30)[test_queue]
    assert stats["depth"] == 2
    assert 29 <= stats["oldest_age_seconds"] <= 30


def test_health_names_an_unconsumed_queue_and_a_message_waiting_too_long(test_queue, settings):
    settings.MIRAGE_QUEUE_MAX_WAIT_SECONDS = 60
    message = {"body": "", "headers": {recording.PUBLISHED_AT_HEADER: time.time() - 125}, "properties": {}}
    store.client().lpush(store.queue_keys(test_queue)[0], json.dumps(message))

    report = system_report()
    assert report["queues"][test_queue] == {"consumers": [], "depth": 1, "oldest_age_seconds": pytest.approx(125, 1)}
    assert f"no worker consumes queue {test_queue}: its tasks wait" in report["reasons"]
    assert f"oldest {test_queue} message waited 125 s" in report["reasons"]


def test_beat_never_ticked_then_ticking_then_silent(monitoring_redis):
    assert "beat has never ticked: is `celery -A mirage beat` running?" in system_report()["reasons"]

    recording.beat_record_tick()
    assert system_report()["beat"]["ok"] is True
    assert not any(reason.startswith("beat") for reason in system_report()["reasons"])

    recording.beat_record_tick(now=time.time() - 65)
    report = system_report()
    assert report["beat"]["ok"] is False
    assert "beat has not ticked for 65 s" in report["reasons"]


def test_beat_counts_as_silent_within_two_reconcile_intervals():
    assert beat_silence_seconds() > settings.MIRAGE_RECONCILE_INTERVAL_SECONDS
    assert beat_silence_seconds() < 2 * settings.MIRAGE_RECONCILE_INTERVAL_SECONDS


def test_every_periodic_reconcile_message_expires_after_its_own_period():
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        assert entry["options"]["expires"] == entry["schedule"]
        assert entry["options"]["expire_seconds"] == int(entry["schedule"])


def test_expired_messages_are_pruned_from_the_oldest_end_and_live_ones_kept(test_queue):
    def message(expires: datetime, name: str) -> str:
        return json.dumps({"body": name, "headers": {"expires": expires.isoformat()}, "properties": {}})

    now = datetime.now(tz=UTC)
    client = store.client()
    client.lpush(store.queue_keys(test_queue)[0], message(now - timedelta(seconds=30), "expired-1"))
    client.lpush(store.queue_keys(test_queue)[0], message(now - timedelta(seconds=1), "expired-2"))
    client.lpush(store.queue_keys(test_queue)[0], message(now + timedelta(seconds=30), "live"))
    client.lpush(
        store.queue_keys(test_queue)[0], json.dumps({"body": "never-expires", "headers": {}, "properties": {}})
    )

    assert recording.queue_prune_expired(queue=test_queue) == 2
    assert [json.loads(raw)["body"] for raw in client.lrange(store.queue_keys(test_queue)[0], 0, -1)] == [
        "never-expires",
        "live",
    ]


class FailingEmbedder(HashEmbedder):
    name = "failing"

    def embed_batch(self, texts):
        raise TransientEmbeddingError("provider answered 503")


def test_provider_calls_are_timed_and_their_errors_counted_by_kind(monitoring_redis):
    MicroBatcher(HashEmbedder()).embed("a text to embed")
    with pytest.raises(TransientEmbeddingError):
        MicroBatcher(FailingEmbedder()).embed("another text")

    hash_calls = {
        key.decode(): value for key, value in store.client().hgetall(store.key("embed_seconds", "hash")).items()
    }
    assert int(hash_calls[b"count".decode()]) == 1
    assert float(hash_calls["sum"]) >= 0
    counters = store.client().hgetall(store.key("counters"))
    assert counters[b"provider_errors|failing|transient"] == b"1"
    assert b"provider_errors|hash|transient" not in counters


def test_the_database_scheduler_keeps_each_entrys_expiry():
    from django_celery_beat.schedulers import ModelEntry

    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        model_entry = ModelEntry.from_entry(name, app=app, **entry)
        assert model_entry.options["expires"] == int(entry["schedule"]), name
