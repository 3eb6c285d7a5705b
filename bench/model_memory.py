"""`python -m bench.model_memory [--texts N]`: what the embed worker's
resident memory is made of with the local model, and what the allocator's
settings change. Not a row of the table (no ratio): issue 18's goal 4 asks
to say what the memory is and to bring it down where settings allow.

Each variant runs in a fresh process (`python -m bench.model_memory
--probe`), which loads the local embedder as the worker does and embeds
texts from 8 threads, one model call at a time, as the worker's
micro-batcher makes them (batches of up to 16). The probe prints its
resident memory (and of it, anonymous and file-backed) after the imports,
after loading the model, and after the texts, and its peak, as JSON.

Variants: as the worker runs by default; glibc's `MALLOC_ARENA_MAX=2`
(threads share two malloc arenas instead of up to eight per core); and
`MALLOC_TRIM_THRESHOLD_` lowered so freed memory goes back to the system.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading

from bench.report import say

VARIANTS = {
    "default": {},
    "MALLOC_ARENA_MAX=2": {"MALLOC_ARENA_MAX": "2"},
    "MALLOC_ARENA_MAX=2, MALLOC_TRIM_THRESHOLD_=128 KiB": {
        "MALLOC_ARENA_MAX": "2",
        "MALLOC_TRIM_THRESHOLD_": str(128 * 1024),
    },
}


def _memory() -> dict[str, float]:
    """Resident, anonymous and file-backed memory and the peak, in MB."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[name] = round(int(value.split()[0]) / 1024, 1)
    return {
        "resident": fields["VmRSS"],
        "anonymous": fields["RssAnon"],
        "file": fields["RssFile"],
        "peak": fields["VmHWM"],
    }


def texts(count: int) -> list[str]:
    """Texts of about 180 words, each different (so no cache could help)."""
    words = [
        "ingestion",
        "chunk",
        "vector",
        "status",
        "worker",
        "broker",
        "queue",
        "document",
        "model",
        "token",
        "embedding",
        "search",
        "index",
        "reconciler",
        "lease",
        "retry",
        "partial",
        "ready",
        "error",
        "cancelled",
        "project",
        "heading",
        "page",
        "chapter",
        "slide",
        "sheet",
    ]
    return [" ".join(words[(i * 7 + j * 3) % len(words)] + str(j % 13) for j in range(180)) for i in range(count)]


def probe(count: int) -> dict:
    from documents.embeddings.batching import MicroBatcher
    from documents.embeddings.local import LocalEmbedder

    figures = {"imported": _memory()}
    embedder = LocalEmbedder()
    embedder.embed_batch(["warm up"])
    figures["model loaded"] = _memory()
    batcher = MicroBatcher(embedder, max_batch=16)
    work = texts(count)
    lock = threading.Lock()

    def run() -> None:
        while True:
            with lock:
                if not work:
                    return
                text = work.pop()
            batcher.embed(text)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    figures[f"after {count} texts"] = _memory()
    return figures


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.model_memory", description=__doc__)
    parser.add_argument("--texts", type=int, default=1200)
    parser.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(args.texts)))
        return 0
    for label, extra in VARIANTS.items():
        completed = subprocess.run(
            [sys.executable, "-m", "bench.model_memory", "--probe", "--texts", str(args.texts)],
            env={**os.environ, **extra},
            capture_output=True,
            text=True,
            check=True,
        )
        figures = json.loads(completed.stdout.strip().splitlines()[-1])
        say(f"{label}:")
        for stage, memory in figures.items():
            say(
                f"  {stage:>18}: resident {memory['resident']:7.1f} MB (anonymous {memory['anonymous']:.1f}, "
                f"file {memory['file']:.1f}), peak {memory['peak']:.1f} MB"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
