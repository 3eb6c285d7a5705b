"""`python -m bench.soak [--documents N] [--chunks N] ...`: run the soak,
print its table and write everything measured to .mirage/bench/soak-<time>.json
(`--report FILE` prints the table of such a file again)."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench import env
from bench.report import say, table
from bench.soak import report
from bench.soak.run import SoakSettings, soak


def _parse_args(argv=None) -> tuple[str, SoakSettings]:
    defaults = SoakSettings()
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--documents", type=int, default=defaults.documents)
    parser.add_argument("--chunks", type=int, default=defaults.chunks_per_document, help="chunks per document")
    parser.add_argument("--uploaders", type=int, default=defaults.uploaders, help="API clients uploading")
    parser.add_argument("--sse", type=int, default=defaults.sse_clients, help="SSE clients listening")
    parser.add_argument(
        "--kill-every", type=float, default=defaults.kill_interval, help="seconds between SIGKILLs of the embed worker"
    )
    parser.add_argument(
        "--result-expiry",
        type=int,
        default=defaults.result_expiry,
        help="MIRAGE_RESULT_EXPIRES_SECONDS of the workers; the soak waits this long after the end",
    )
    parser.add_argument(
        "--backlog", type=int, default=defaults.backlog, help="uploaders wait while this many documents are not final"
    )
    parser.add_argument("--sample-every", type=float, default=defaults.sample_seconds, help="seconds between samples")
    parser.add_argument("--deadline-hours", type=float, default=defaults.deadline_hours)
    parser.add_argument("--report", default="", metavar="FILE", help="print the table of a soak's JSON file and exit")
    args = parser.parse_args(argv)
    if args.documents < 1 or args.chunks < 1 or args.uploaders < 1 or args.sse < 0:
        parser.error("documents, chunks and uploaders must be at least 1, sse at least 0")
    return args.report, SoakSettings(
        documents=args.documents,
        chunks_per_document=args.chunks,
        uploaders=args.uploaders,
        sse_clients=args.sse,
        kill_interval=args.kill_every,
        result_expiry=args.result_expiry,
        backlog=args.backlog,
        sample_seconds=args.sample_every,
        deadline_hours=args.deadline_hours,
    )


def main(argv=None) -> int:
    saved, settings = _parse_args(argv)
    if saved:
        return print_report(json.loads(Path(saved).read_text()))
    started = time.monotonic()
    measured = soak(settings)
    path = env.WORK_DIR / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(measured, indent=1, default=str))
    code = print_report(measured)
    print(f"load average at end: {', '.join(f'{load:.2f}' for load in os.getloadavg())}")
    print(f"total time: {time.monotonic() - started:.0f} s; everything measured: {path}")
    say("soak done")
    return code


def print_report(measured: dict) -> int:
    """Print the table and its notes; 1 when a goal was not met."""
    results = report.results(measured)
    print()
    print(table(results))
    print()
    for result in results:
        for note in result.notes:
            print(f"- {result.row}: {note}")
    print()
    return 0 if all(result.met is not False for result in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
