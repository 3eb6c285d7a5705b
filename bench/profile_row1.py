"""`python -m bench.profile_row1 [--chunks N] [--py-spy] [--perf]`: where row 1's
CPU per chunk goes. Not a row of the table (it prints no ratio): it runs
row 1's pipeline once (same workers, same document shape) and reads, around
that run only:

- CPU seconds of each process role (/proc, as row 1 does);
- PostgreSQL's own counters per table and index (pg_stat_user_tables,
  pg_statio_user_indexes): rows inserted, updated (and how many of those
  were HOT, i.e. wrote no index entry), index blocks touched, per chunk;
  pg_stat_statements is not used: the project's server does not preload it;
- Redis `INFO commandstats`: calls and microseconds per command, per chunk;
- with --py-spy, a sampling profile of the embed worker's Python CPU time
  (py-spy --gil: only the thread holding the GIL is sampled; from
  requirements/dev.txt), summed by function;
- with --perf, a sampling profile of PostgreSQL's backends (Linux `perf`),
  summed by C function.

Everything runs in the benchmark database and Redis database (bench.env).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import time

from bench import env
from bench.report import say

TABLES = ("documents_chunk", "documents_document", "jobs_job", "documents_embeddingcacheentry", "common_statuschange")


def table_counters() -> dict[str, dict[str, int]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del, seq_scan, idx_scan "
            "FROM pg_stat_user_tables"
        )
        tables = {
            row[0]: dict(zip(("ins", "upd", "hot_upd", "del", "seq_scan", "idx_scan"), row[1:], strict=True))
            for row in cursor.fetchall()
        }
        cursor.execute(
            "SELECT indexrelname, idx_blks_read + idx_blks_hit, "
            "(SELECT idx_scan FROM pg_stat_user_indexes u WHERE u.indexrelid = s.indexrelid), "
            "(SELECT idx_tup_read FROM pg_stat_user_indexes u WHERE u.indexrelid = s.indexrelid) "
            "FROM pg_statio_user_indexes s"
        )
        indexes = {
            row[0]: {"blocks": row[1] or 0, "scans": row[2] or 0, "tuples_read": row[3] or 0}
            for row in cursor.fetchall()
        }
        cursor.execute(
            "SELECT xact_commit, blks_hit + blks_read, tup_fetched, tup_returned FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
        commits, blocks, fetched, returned = cursor.fetchone()
    return {
        "tables": tables,
        "indexes": indexes,
        "database": {"commits": commits, "blocks": blocks, "tuples_fetched": fetched, "tuples_returned": returned},
    }


def commandstats() -> dict[str, tuple[int, int]]:
    info = env.redis_client().info("commandstats")
    return {name.removeprefix("cmdstat_"): (value["calls"], value["usec"]) for name, value in info.items()}


def _diff(after: dict, before: dict) -> dict:
    return {key: value - before.get(key, 0) for key, value in after.items()}


def report_postgres(before: dict, after: dict, chunks: int) -> None:
    say("PostgreSQL, per chunk (pg_stat_* counters; the bench database only):")
    database = _diff(after["database"], before["database"])
    say(
        "  transactions {commits:.2f}, buffer accesses {blocks:.1f}, tuples fetched {tuples_fetched:.1f}, "
        "tuples returned {tuples_returned:.1f}".format(**{key: value / chunks for key, value in database.items()})
    )
    for table in TABLES:
        if table not in after["tables"]:
            continue
        diff = _diff(after["tables"][table], before["tables"].get(table, {}))
        if not any(diff.values()):
            continue
        say(
            f"  {table}: inserts {diff['ins'] / chunks:.2f}, updates {diff['upd'] / chunks:.2f} "
            f"(HOT {diff['hot_upd'] / chunks:.2f}), deletes {diff['del'] / chunks:.2f}, "
            f"index scans {diff['idx_scan'] / chunks:.2f}, sequential scans {diff['seq_scan'] / chunks:.3f}"
        )
    rows = []
    for index, counters in after["indexes"].items():
        diff = _diff(counters, before["indexes"].get(index, {}))
        if diff["blocks"] or diff["scans"]:
            rows.append((diff["blocks"], index, diff))
    for blocks, index, diff in sorted(rows, reverse=True)[:12]:
        say(
            f"  index {index}: blocks {blocks / chunks:.1f}, scans {diff['scans'] / chunks:.2f}, "
            f"entries read {diff['tuples_read'] / chunks:.1f}"
        )


def report_redis(before: dict, after: dict, chunks: int) -> None:
    say("Redis, per chunk (INFO commandstats):")
    rows = []
    for command, (calls, usec) in after.items():
        calls_before, usec_before = before.get(command, (0, 0))
        if calls - calls_before:
            rows.append((usec - usec_before, command, calls - calls_before))
    total = sum(row[0] for row in rows)
    say(f"  all commands: {total / chunks:.0f} us of Redis time per chunk")
    for usec, command, calls in sorted(rows, reverse=True)[:10]:
        say(f"  {command}: {calls / chunks:.2f} calls, {usec / chunks:.1f} us")


def summarise_collapsed(path: str, *, top: int = 25, own: bool = False) -> list[tuple[float, str]]:
    """Share of samples per frame from a collapsed-stack file (`a;b;c N`):
    inclusive (a frame anywhere in the stack) or own (the leaf)."""
    counts: collections.Counter = collections.Counter()
    total = 0
    with open(path) as handle:
        for line in handle:
            stack, _, number = line.rstrip().rpartition(" ")
            if not number.isdigit():
                continue
            samples = int(number)
            total += samples
            frames = stack.split(";")
            if own:
                counts[frames[-1]] += samples
            else:
                for frame in set(frames):
                    counts[frame] += samples
    return [(samples / total, frame) for frame, samples in counts.most_common(top)] if total else []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_row1", description=__doc__)
    parser.add_argument("--chunks", type=int, default=3000)
    parser.add_argument("--py-spy", action="store_true", help="sample the embed worker with py-spy")
    parser.add_argument("--perf", action="store_true", help="sample PostgreSQL with Linux perf")
    args = parser.parse_args(argv)

    env.configure()
    env.check_redis_unshared()
    env.setup_django()
    env.reset_state()
    from bench import orchestration
    from bench.processes import ProcessGroup

    content = orchestration.make_document(chunks=args.chunks, seed=7)
    with ProcessGroup("profile-row1") as group:
        _, _embed_node = group.pipeline_workers(pool="threads", concurrency=8)
        orchestration.run_pipeline(content=orchestration.make_document(chunks=100, seed=1007), name="warmup")
        samplers = []
        if args.py_spy:
            spy = shutil.which("py-spy") or os.path.join(os.path.dirname(os.sys.executable), "py-spy")
            output = str(env.LOG_DIR / "profile-embed.collapsed")
            samplers.append(
                (
                    "embed worker (py-spy)",
                    output,
                    subprocess.Popen(
                        [
                            spy,
                            "record",
                            "--pid",
                            str(group.processes["embed"].pid),
                            "--format",
                            "raw",
                            "--gil",
                            "--rate",
                            "50",
                            "--nonblocking",
                            "--output",
                            output,
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ),
                )
            )
        if args.perf:
            output = str(env.LOG_DIR / "profile-postgres.data")
            pids = subprocess.run(["pgrep", "-d", ",", "-x", "postgres"], capture_output=True, text=True).stdout
            samplers.append(
                (
                    "PostgreSQL (perf)",
                    output,
                    subprocess.Popen(
                        ["perf", "record", "-F", "199", "-g", "-o", output, "-p", pids.strip()],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    ),
                )
            )
        time.sleep(1)
        postgres_before, redis_before, cpu_before = table_counters(), commandstats(), group.cpu_seconds()
        times = orchestration.run_pipeline(content=content, name="profile")
        cpu_after, redis_after, postgres_after = group.cpu_seconds(), commandstats(), table_counters()
        for _, _, process in samplers:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)
    chunks = times.chunks
    say(
        f"{chunks} chunks in {times.from_dispatch:.1f} s from end of parse ({chunks / times.from_dispatch:.0f} chunks/s)"
    )
    say("CPU per chunk: " + orchestration.cpu_per_item(cpu_before, cpu_after, chunks))
    report_postgres(postgres_before, postgres_after, chunks)
    report_redis(redis_before, redis_after, chunks)
    for label, output, _ in samplers:
        if output.endswith(".data"):
            collapsed = output + ".collapsed"
            script = subprocess.run(["perf", "script", "-i", output], capture_output=True, text=True).stdout
            with open(collapsed, "w") as handle:
                handle.write(_perf_collapse(script))
            output = collapsed
        for own in (True, False):
            say(f"{label}, {'own' if own else 'inclusive'} share of samples (stacks in {output}):")
            for share, frame in summarise_collapsed(output, own=own):
                say(f"  {share * 100:5.1f} %  {frame[:150]}")
    return 0


def _perf_collapse(script: str) -> str:
    """`perf script` output to collapsed stacks (root first)."""
    stacks: collections.Counter = collections.Counter()
    frames: list[str] = []
    for line in script.splitlines() + [""]:
        if not line.strip():
            if frames:
                stacks[";".join(reversed(frames))] += 1
            frames = []
        elif line.startswith(("\t", " ")):
            parts = line.split()
            if len(parts) >= 2:
                frames.append(parts[1].split("+")[0])
    return "".join(f"{stack} {count}\n" for stack, count in stacks.items())


if __name__ == "__main__":
    raise SystemExit(main())
