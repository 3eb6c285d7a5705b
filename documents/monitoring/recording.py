"""What the running processes write down about themselves, in Redis, so that
the web process can report it (/healthz, /metrics, the admin System page)
whichever machine the work ran on.

Everything here hangs off Celery signals and the embedding batcher's
observer hook: the tasks and services it describes are not edited for it.

- Every task message carries its publish time (header `mirage_published_at`),
  so the age of the oldest waiting message can be read from the queue.
- Beat's tick is the moment beat publishes a periodic message (its
  `before_task_publish`), not a task a worker runs: a tick must not depend
  on a consumer being there, and it works under any scheduler.
- When beat publishes a reconcile message it also removes already expired
  reconcile messages from that queue: with the Redis transport an expired
  message is only dropped when a worker receives it, so without a consumer
  they would pile up.
- Reconciler runs (`reconcile.*`): last success, its duration and repairs,
  failures, repairs in total.
- Counters of chunks embedded, provider calls (duration histogram) and
  provider errors. Redis keeps them (not prometheus_client multiprocess
  files) because the processes producing them run on several machines.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime

import redis
from celery.signals import beat_init, before_task_publish, task_postrun, task_prerun, worker_ready

from documents.embeddings import batching
from documents.embeddings.base import PermanentEmbeddingError, TransientEmbeddingError
from documents.monitoring import store

logger = logging.getLogger(__name__)

PUBLISHED_AT_HEADER = "mirage_published_at"
RECONCILE_PREFIX = "reconcile."
EMBED_TASK = "documents.embed_chunk"
# Upper bounds of the provider-call duration histogram, in seconds.
EMBED_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Expired messages are looked for among this many of the oldest in a queue;
# beat prunes at every publish, so they never get further from the end.
_PRUNE_WINDOW = 200

_in_beat = False
_reconciler_started: dict[str, float] = {}


def reconciler_label(task_name: str) -> str:
    """ "reconcile.redispatch_stuck_chunks" -> "redispatch_stuck_chunks"."""
    return task_name.removeprefix(RECONCILE_PREFIX)


def repairs_in(result) -> int:
    """Repairs a reconciler reports in its return value: a count, a list of
    what it repaired, or a dict of counts by kind."""
    if isinstance(result, bool) or result is None:
        return 0
    if isinstance(result, int):
        return result
    if isinstance(result, dict):
        return sum(repairs_in(value) for value in result.values())
    if isinstance(result, list | tuple | set):
        return len(result)
    return 0


# --- Writers --------------------------------------------------------------------------


def _quietly(write) -> None:
    """Figures are worth less than the work: a Redis failure is logged, never raised."""
    try:
        write()
    except redis.RedisError as exc:
        logger.warning("monitoring: could not record a figure in Redis: %s", exc)


def beat_record_tick(*, now: float | None = None) -> None:
    _quietly(lambda: store.client().set(store.key("beat", "last_tick"), repr(now or time.time())))


def reconciler_record_success(*, reconciler: str, duration: float, repairs: int, now: float | None = None) -> None:
    def write() -> None:
        pipe = store.client().pipeline(transaction=False)
        record = store.key("reconciler", reconciler)
        pipe.hset(
            record,
            mapping={
                "last_success_at": repr(now or time.time()),
                "last_duration_seconds": repr(round(duration, 6)),
                "last_repairs": repairs,
            },
        )
        pipe.hincrby(record, "repairs_total", repairs)
        pipe.hincrby(record, "runs_succeeded", 1)
        pipe.execute()

    _quietly(write)


def reconciler_record_failure(*, reconciler: str, error: str, now: float | None = None) -> None:
    def write() -> None:
        pipe = store.client().pipeline(transaction=False)
        record = store.key("reconciler", reconciler)
        pipe.hset(record, mapping={"last_failure_at": repr(now or time.time()), "last_error": error[:300]})
        pipe.hincrby(record, "runs_failed", 1)
        pipe.execute()

    _quietly(write)


def counter_increment(field: str, amount: int = 1) -> None:
    _quietly(lambda: store.client().hincrby(store.key("counters"), field, amount))


def chunks_record_embedded(*, count: int = 1, now: float | None = None) -> None:
    """The total (a Prometheus counter) and a count per minute for the
    admin's recent throughput, kept an hour."""
    minute = int((now or time.time()) // 60)

    def write() -> None:
        pipe = store.client().pipeline(transaction=False)
        pipe.hincrby(store.key("counters"), "chunks_embedded", count)
        per_minute = store.key("embedded_per_minute", str(minute))
        pipe.incrby(per_minute, count)
        pipe.expire(per_minute, 3600)
        pipe.execute()

    _quietly(write)


def chunks_embedded_recently(*, minutes: int, now: float | None = None) -> int:
    """Chunks embedded in the last `minutes` whole minutes (the current one excluded)."""
    current = int((now or time.time()) // 60)
    keys = [store.key("embedded_per_minute", str(minute)) for minute in range(current - minutes, current)]
    return sum(int(value) for value in store.client().mget(keys) if value is not None)


def embed_record_call(*, provider: str, seconds: float, texts: int, error: BaseException | None) -> None:
    """One provider call of the micro-batcher (a batch_observers entry)."""
    bucket = next((str(bound) for bound in EMBED_SECONDS_BUCKETS if seconds <= bound), "+Inf")

    def write() -> None:
        pipe = store.client().pipeline(transaction=False)
        histogram = store.key("embed_seconds", provider)
        pipe.hincrby(histogram, bucket, 1)
        pipe.hincrby(histogram, "count", 1)
        pipe.hincrbyfloat(histogram, "sum", seconds)
        if error is not None:
            pipe.hincrby(store.key("counters"), f"provider_errors|{provider}|{error_kind(error)}", 1)
        pipe.execute()

    _quietly(write)


def error_kind(error: BaseException) -> str:
    if isinstance(error, TransientEmbeddingError):
        return "transient"
    if isinstance(error, PermanentEmbeddingError):
        return "permanent"
    return "unexpected"


def queue_prune_expired(*, queue: str, now: float | None = None) -> int:
    """Remove messages whose `expires` has passed from the oldest end of
    `queue`; returns how many. A message a worker takes meanwhile is simply
    not found (LREM removes by value)."""
    now = now or time.time()
    client = store.client()
    removed = 0
    for list_key in store.queue_keys(queue):
        for raw in client.lrange(list_key, -_PRUNE_WINDOW, -1):
            expires = message_expires_at(raw)
            if expires is not None and expires < now:
                removed += client.lrem(list_key, 1, raw)
    return removed


def message_expires_at(raw: bytes) -> float | None:
    headers = message_headers(raw)
    expires = headers.get("expires")
    if not expires:
        return None
    try:
        return datetime.fromisoformat(expires).timestamp() if isinstance(expires, str) else float(expires)
    except (TypeError, ValueError):
        return None


def message_headers(raw: bytes) -> dict:
    """The task headers of a message as the Redis transport stores it."""
    try:
        headers = json.loads(raw).get("headers") or {}
    except (ValueError, AttributeError):
        return {}
    return headers if isinstance(headers, dict) else {}


# --- Signal receivers ---------------------------------------------------------------------


@before_task_publish.connect(dispatch_uid="monitoring.stamp_publish")
def _stamp_publish(
    sender: str | None = None, headers: dict | None = None, routing_key: str | None = None, **kwargs
) -> None:
    now = time.time()
    if headers is not None:
        headers[PUBLISHED_AT_HEADER] = now
    if _in_beat and sender and sender.startswith(RECONCILE_PREFIX):
        beat_record_tick(now=now)
        if routing_key:
            try:
                removed = queue_prune_expired(queue=routing_key, now=now)
            except redis.RedisError as exc:
                logger.warning("monitoring: could not prune expired messages of %s: %s", routing_key, exc)
            else:
                if removed:
                    logger.info(
                        "%s expired reconcile messages removed from queue %s: no worker took them "
                        "within their interval",
                        removed,
                        routing_key,
                    )


@beat_init.connect(dispatch_uid="monitoring.beat_started")
def _beat_started(**kwargs) -> None:
    global _in_beat
    _in_beat = True
    beat_record_tick()


@task_prerun.connect(dispatch_uid="monitoring.task_started")
def _task_started(task_id: str | None = None, task=None, **kwargs) -> None:
    if task is not None and task.name.startswith(RECONCILE_PREFIX):
        _reconciler_started[task_id] = time.monotonic()


@task_postrun.connect(dispatch_uid="monitoring.task_finished")
def _task_finished(task_id: str | None = None, task=None, retval=None, state: str | None = None, **kwargs) -> None:
    if task is None:
        return
    if task.name.startswith(RECONCILE_PREFIX):
        started = _reconciler_started.pop(task_id, None)
        duration = time.monotonic() - started if started is not None else 0.0
        reconciler = reconciler_label(task.name)
        if state == "SUCCESS":
            reconciler_record_success(reconciler=reconciler, duration=duration, repairs=repairs_in(retval))
        elif state in ("FAILURE", "RETRY"):
            reconciler_record_failure(reconciler=reconciler, error=f"{type(retval).__name__}: {retval}")
    elif task.name == EMBED_TASK and state == "SUCCESS" and retval in ("ready", "corrupted"):
        chunks_record_embedded()


@worker_ready.connect(dispatch_uid="monitoring.worker_ready")
def _worker_ready(sender=None, **kwargs) -> None:
    # In a thread: the worker answers the broadcast only once this returns.
    threading.Thread(target=_warn_about_unconsumed_queues, name="mirage-queue-check", daemon=True).start()


def _warn_about_unconsumed_queues() -> None:
    from documents.monitoring import queues

    snapshot = queues.workers_snapshot(fresh=True, timeout=2.0)
    if "error" in snapshot:
        logger.warning("could not ask the running workers which queues they consume: %s", snapshot["error"])
        return
    unconsumed = [queue for queue in queues.mirage_queues() if not snapshot["queues"].get(queue)]
    for queue in unconsumed:
        logger.warning(
            "no running worker consumes queue %s: %s (start a worker with -Q %s)",
            queue,
            queues.CONSEQUENCES.get(queue, "its tasks wait"),
            queue,
        )


batching.batch_observers.append(embed_record_call)
