"""What the soak reads while it runs and at its end: documents and chunks
finished (PostgreSQL), Redis memory and keys, each process's resident
memory, and every reconciler tick the workers record in Redis."""

from __future__ import annotations

import json
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import datetime

from bench.processes import ProcessGroup
from bench.soak.clients import Shared
from bench.soak.figures import key_families, longest_ttls

# Between two readings of the backlog and of the reconcilers' records.
TICK_SECONDS = 1.0
SCAN_BATCH = 1000


@dataclass
class Sample:
    at: float
    chunks_final: int
    chunks: int
    documents_final: int
    documents: int
    redis_used_memory: int
    redis_keys: int
    resident: dict[str, int]


@dataclass
class Tick:
    at: float
    reconciler: str
    seconds: float


def document_counts() -> tuple[int, int]:
    """(documents not final, documents)."""
    from django.db import connection

    from documents.models import Document

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE status = ANY(%s)), count(*) FROM documents_document",
            [list(Document.ACTIVE_STATUSES)],
        )
        return cursor.fetchone()


def chunk_counts() -> tuple[int, int]:
    """(chunks in a final status, chunks)."""
    from django.db import connection

    from documents.models import Chunk

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE status = ANY(%s)), count(*) FROM documents_chunk",
            [list(Chunk.FINAL_STATUSES)],
        )
        return cursor.fetchone()


def reconciler_intervals() -> dict[str, float]:
    """Seconds between two runs of each reconciler beat sends."""
    from django.conf import settings

    from documents.monitoring.recording import reconciler_label

    return {reconciler_label(entry["task"]): entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}


def reconciler_names() -> list[str]:
    return sorted(reconciler_intervals())


class Monitor(threading.Thread):
    """Reads the backlog and the reconcilers' records every TICK_SECONDS
    and takes a Sample every `sample_seconds`, until `halt` is set."""

    def __init__(self, *, groups: list[ProcessGroup], shared: Shared, redis, sample_seconds: float) -> None:
        super().__init__(name="soak-monitor", daemon=True)
        from documents.monitoring import store

        self.groups, self.shared, self.redis, self.sample_seconds = groups, shared, redis, sample_seconds
        self.samples: list[Sample] = []
        self.ticks: list[Tick] = []
        self.errors: list[str] = []
        self.halt = threading.Event()
        self._records = {name: store.key("reconciler", name) for name in reconciler_names()}
        self._seen: dict[str, bytes | None] = {}

    def run(self) -> None:
        from django.db import connection

        next_sample = 0.0
        try:
            while not self.halt.is_set():
                try:
                    unfinished, _ = document_counts()
                    self.shared.set_unfinished(unfinished)
                    self._read_ticks()
                    if time.monotonic() >= next_sample:
                        next_sample = time.monotonic() + self.sample_seconds
                        self.samples.append(self.sample())
                except Exception:  # noqa: BLE001 - one failed reading must not end the soak's figures
                    self.errors.append(traceback.format_exc(limit=3))
                    connection.close()
                self.halt.wait(TICK_SECONDS)
        finally:
            connection.close()

    def sample(self) -> Sample:
        chunks_final, chunks = chunk_counts()
        unfinished, documents = document_counts()
        resident = {}
        for group in self.groups:
            resident |= group.resident_bytes()
        return Sample(
            at=time.time(),
            chunks_final=chunks_final,
            chunks=chunks,
            documents_final=documents - unfinished,
            documents=documents,
            redis_used_memory=int(self.redis.info("memory")["used_memory"]),
            redis_keys=int(self.redis.dbsize()),
            resident=resident,
        )

    def _read_ticks(self) -> None:
        """Record each reconciler run once: its record changes its
        `last_success_at` with every successful run."""
        pipe = self.redis.pipeline(transaction=False)
        for record in self._records.values():
            pipe.hmget(record, "last_success_at", "last_duration_seconds")
        for name, (finished, seconds) in zip(self._records, pipe.execute(), strict=True):
            if finished is None or finished == self._seen.get(name):
                continue
            self._seen[name] = finished
            self.ticks.append(Tick(at=float(finished), reconciler=name, seconds=float(seconds)))


# --- Redis at a moment ---------------------------------------------------------------


def redis_keys(client, prefix: str) -> dict:
    """Every key of the database by shape, with each shape's longest time
    to live (-1: never expires), the memory the keys take (MEMORY USAGE,
    values included) and the server's used_memory."""
    keys = [key.decode(errors="replace") for key in client.scan_iter(count=SCAN_BATCH)]
    memory, ttls = 0, []
    for start in range(0, len(keys), SCAN_BATCH):
        batch = keys[start : start + SCAN_BATCH]
        pipe = client.pipeline(transaction=False)
        for key in batch:
            pipe.memory_usage(key)
            pipe.ttl(key)
        answers = pipe.execute()
        memory += sum(size or 0 for size in answers[0::2])
        # -2: the key expired between SCAN and TTL.
        ttls += [(key, ttl) for key, ttl in zip(batch, answers[1::2], strict=True) if ttl != -2]
    info = client.info("memory")
    return {
        "keys": len(keys),
        "key_bytes": memory,
        "used_memory": int(info["used_memory"]),
        "used_memory_peak": int(info["used_memory_peak"]),
        "families": key_families(keys, prefix),
        "longest_ttls": longest_ttls(ttls, prefix),
    }


def results_written_before(client, prefix: str, moment: float) -> int:
    """Task results still stored that were written before `moment` (their
    `date_done`)."""
    keys = list(client.scan_iter(match=f"{prefix}celery-task-meta-*", count=SCAN_BATCH))
    older = 0
    for start in range(0, len(keys), SCAN_BATCH):
        for raw in client.mget(keys[start : start + SCAN_BATCH]):
            if raw is None:
                continue
            done = json.loads(raw).get("date_done")
            if done and datetime.fromisoformat(done).timestamp() < moment:
                older += 1
    return older


# --- PostgreSQL at a moment ----------------------------------------------------------


def table_statistics() -> dict[str, dict]:
    """Sizes, live and dead tuples and autovacuum runs of the tables the
    pipeline writes, and the database's size."""
    from django.db import connection

    from common.filestore.models import StoredBlock
    from common.models import StatusChange
    from documents.models import Chunk, Document
    from jobs.models import Job

    tables = [model._meta.db_table for model in (Chunk, Document, Job, StatusChange, StoredBlock)]

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, n_live_tup, n_dead_tup, last_autovacuum, autovacuum_count, "
            "pg_total_relation_size(relid), pg_relation_size(relid), pg_indexes_size(relid) "
            "FROM pg_stat_user_tables WHERE relname = ANY(%s)",
            [tables],
        )
        found = {
            name: {
                "live": live,
                "dead": dead,
                "last_autovacuum": last.timestamp() if last else None,
                "autovacuum_count": runs,
                "total_bytes": total,
                "heap_bytes": heap,
                "index_bytes": indexes,
            }
            for name, live, dead, last, runs, total, heap, indexes in cursor.fetchall()
        }
        cursor.execute("SELECT pg_database_size(current_database())")
        found["database"] = {"total_bytes": cursor.fetchone()[0]}
        cursor.execute(
            "SELECT current_setting('autovacuum_vacuum_threshold')::int, "
            "current_setting('autovacuum_vacuum_scale_factor')::float"
        )
        threshold, scale = cursor.fetchone()
        found["autovacuum"] = {"threshold": threshold, "scale_factor": scale}
    return found


def autovacuum_settled(statistics: dict, since: float, table: str = "documents_chunk") -> bool:
    """Whether autovacuum ran on `table` after `since`, or its dead tuples
    are below the point where autovacuum would (so it will not run)."""
    entry = statistics[table]
    if entry["last_autovacuum"] and entry["last_autovacuum"] >= since:
        return True
    limits = statistics["autovacuum"]
    return entry["dead"] <= limits["threshold"] + limits["scale_factor"] * entry["live"]
