"""The platform's report on itself: is the machinery alive, what waits and
for how long. /healthz answers it, the admin System page and banner show
it, and its reasons say in words what is wrong."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import redis
from django.conf import settings
from django.db import connection

from documents.monitoring import queues, store
from documents.monitoring.recording import reconciler_label


def _when(timestamp: float | None) -> str | None:
    return datetime.fromtimestamp(timestamp, tz=UTC).isoformat() if timestamp is not None else None


def _float(value) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def database_check() -> dict:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return {"ok": True}
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return {"ok": False, "error": " ".join(str(exc).split())[:200]}


def redis_check() -> dict:
    try:
        store.client().ping()
        return {"ok": True}
    except redis.RedisError as exc:
        return {"ok": False, "error": str(exc)[:200]}


def beat_silence_seconds() -> float:
    """Beat sends the reconcilers every interval; silent for one and a half
    intervals, it has stopped (or cannot reach Redis)."""
    return settings.MIRAGE_RECONCILE_INTERVAL_SECONDS * 1.5


def beat_state(*, now: float) -> dict:
    last_tick = _float(store.client().get(store.key("beat", "last_tick")))
    silent_for = None if last_tick is None else round(max(0.0, now - last_tick), 1)
    ok = silent_for is not None and silent_for <= beat_silence_seconds()
    return {
        "ok": ok,
        "last_tick_at": _when(last_tick),
        "last_tick_timestamp": last_tick,
        "seconds_since_last_tick": silent_for,
    }


def reconciler_schedule() -> dict[str, float]:
    """Reconciler name -> seconds between its runs, from the beat schedule."""
    schedule = {}
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        if entry["task"].startswith("reconcile."):
            every = entry["schedule"]
            seconds = every.total_seconds() if hasattr(every, "total_seconds") else float(every)
            schedule[reconciler_label(entry["task"])] = seconds
    return schedule


def reconciler_states(*, now: float) -> dict[str, dict]:
    schedule = reconciler_schedule()
    pipe = store.client().pipeline(transaction=False)
    for name in schedule:
        pipe.hgetall(store.key("reconciler", name))
    states = {}
    for (name, every), raw in zip(schedule.items(), pipe.execute(), strict=True):
        record = {key.decode(): value.decode() for key, value in raw.items()}
        last_success = _float(record.get("last_success_at"))
        last_failure = _float(record.get("last_failure_at"))
        states[name] = {
            "every_seconds": every,
            "last_success_at": _when(last_success),
            "last_success_timestamp": last_success,
            "seconds_since_success": round(now - last_success, 1) if last_success is not None else None,
            "last_duration_seconds": _float(record.get("last_duration_seconds")),
            "last_repairs": int(record.get("last_repairs", 0)),
            "repairs_total": int(record.get("repairs_total", 0)),
            "runs_succeeded": int(record.get("runs_succeeded", 0)),
            "runs_failed": int(record.get("runs_failed", 0)),
            "last_failure_at": _when(last_failure),
            "last_error": record.get("last_error") if last_failure and last_failure > (last_success or 0) else None,
        }
    return states


def system_report() -> dict:
    """Everything /healthz reports. `reasons` lists each fault in words;
    empty means healthy."""
    now = time.time()
    report: dict = {"database": database_check(), "redis": redis_check()}
    reasons = []
    if not report["database"]["ok"]:
        reasons.append(f"the database does not answer: {report['database']['error']}")
    if not report["redis"]["ok"]:
        reasons.append(f"Redis does not answer: {report['redis']['error']}")
        report.update(
            workers={"ok": False, "count": 0, "names": []},
            queues={},
            beat={"ok": False},
            reconcilers={},
            reasons=reasons,
        )
        report["status"] = "degraded"
        return report

    workers = queues.workers_snapshot()
    report["workers"] = {key: workers[key] for key in ("ok", "count", "names", "error") if key in workers}
    if "error" in workers:
        reasons.append(f"the workers could not be asked: {workers['error']}")
    elif not workers["ok"]:
        reasons.append("no worker answers")

    max_wait = settings.MIRAGE_QUEUE_MAX_WAIT_SECONDS
    report["queues"] = {}
    for queue, stats in queues.queue_stats(now=now).items():
        consumers = workers["queues"].get(queue, [])
        report["queues"][queue] = {"consumers": consumers, **stats}
        if "error" not in workers and not consumers:
            reasons.append(f"no worker consumes queue {queue}: {queues.CONSEQUENCES.get(queue, 'its tasks wait')}")
        age = stats["oldest_age_seconds"]
        if age is not None and age > max_wait:
            reasons.append(f"oldest {queue} message waited {age:.0f} s")

    report["beat"] = beat = beat_state(now=now)
    if beat["last_tick_timestamp"] is None:
        reasons.append("beat has never ticked: is `celery -A mirage beat` running?")
    elif not beat["ok"]:
        reasons.append(f"beat has not ticked for {beat['seconds_since_last_tick']:.0f} s")

    report["reconcilers"] = reconcilers = reconciler_states(now=now)
    for name, state in reconcilers.items():
        if state["last_error"]:
            reasons.append(f"reconciler {name} failed its last run: {state['last_error']}")
        # Three missed runs, with one interval of slack for beat's own delay.
        late_after = 3 * state["every_seconds"] + settings.MIRAGE_RECONCILE_INTERVAL_SECONDS
        since = state["seconds_since_success"]
        if since is not None and since > late_after:
            reasons.append(
                f"reconciler {name} has not succeeded for {since:.0f} s (it runs every {state['every_seconds']:.0f} s)"
            )

    report["reasons"] = reasons
    report["status"] = "degraded" if reasons else "ok"
    return report
