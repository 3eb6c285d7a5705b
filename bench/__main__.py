"""`python -m bench [--only 1,4] [--quick]`: run the benchmarks, print one table."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import time
import traceback

from bench import env
from bench.report import Result, say, table

ROWS = {
    1: ("orchestration", "pipeline vs no-op chord"),
    2: ("model_bound", "local model through the pipeline vs batched encode"),
    3: ("status_reads", "document list queries and latency"),
    4: ("vector_search", "HNSW vs exact scan"),
    5: ("reconcilers", "reconciler tick, 100k finished documents vs empty"),
    6: ("reindex", "reindex of an unchanged document"),
    7: ("memory", "parse memory and bulk insert rate"),
    8: ("ocr", "OCR pages per second and memory; a 100,000-row sheet's memory"),
    9: ("filtered_search", "filtered search, 1% filter of a 100,000-chunk project"),
    10: ("keyword_recall", "keyword search recall, English, Japanese and Chinese, before vs after"),
    11: ("fairness", "fair share across projects, and priority (rows 11 and 12)"),
    13: ("peer", "Mirage vs LlamaIndex IngestionPipeline, tokens per second"),
}


def _parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default="", help="comma-separated row numbers, e.g. 1,4 (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for development; figures not comparable")
    args = parser.parse_args(argv)
    args.rows = sorted({int(part) for part in args.only.split(",") if part.strip()}) or sorted(ROWS)
    unknown = [row for row in args.rows if row not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; rows are {sorted(ROWS)}")
    return args


def machine_description() -> list[str]:
    from django.db import connection

    cpu = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kb = int(meminfo.readline().split()[1])
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        pgvector = cursor.fetchone()[0]
    return [
        f"CPU: {cpu}, {os.cpu_count()} cores; RAM {total_kb / 1024 / 1024:.1f} GiB",
        f"Python {platform.python_version()}, PostgreSQL {postgres}, pgvector {pgvector}",
        f"load average at start: {', '.join(f'{load:.2f}' for load in os.getloadavg())}",
    ]


def main(argv=None) -> int:
    args = _parse_args(argv)
    started = time.monotonic()
    env.configure()
    say(f"database {env.bench_database_url()} , redis {env.bench_redis_url()}")
    env.check_redis_unshared()
    env.setup_django()
    env.redis_client().flushdb()
    for line in machine_description():
        say(line)
    results: list[Result] = []
    failures = []
    for number in args.rows:
        module_name, title = ROWS[number]
        say(f"row {number}: {title}{' (quick)' if args.quick else ''}")
        env.reset_state()
        module = importlib.import_module(f"bench.{module_name}")
        try:
            results.extend(module.run(quick=args.quick))
        except Exception:  # noqa: BLE001 - one broken row must not hide the others' figures
            failures.append(number)
            say(f"row {number} FAILED:\n{traceback.format_exc()}")
            results.append(Result(f"{number} {title}", "failed", "-", None, "-", False))
    env.reset_state()
    elapsed = time.monotonic() - started
    print()
    print(table(results))
    notes = [(result.row, note) for result in results for note in result.notes]
    if notes:
        print()
        for row, note in notes:
            print(f"- {row}: {note}")
    print()
    print(f"load average at end: {', '.join(f'{load:.2f}' for load in os.getloadavg())}")
    print(f"total time: {elapsed:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
