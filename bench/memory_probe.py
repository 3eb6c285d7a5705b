"""Run in a fresh process by bench.memory: parse and chunk one file, or run
document_parse on one file, and print as JSON the process's resident memory
once everything is imported, and its peak while the work ran.

The peak is the kernel's high-water mark (VmHWM), reset after the imports
so that it covers the work alone (ru_maxrss cannot be reset).

    python -m bench.memory_probe parse PATH
    python -m bench.memory_probe ingest PATH
    python -m bench.memory_probe ocr PATH      (Tesseract's own peak too)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def start_measuring() -> float:
    """Reset the high-water mark to the current resident size; returns it (MB)."""
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return _status_mb("VmRSS")


def peak_mb() -> float:
    return _status_mb("VmHWM")


def parse(path: Path) -> dict:
    from documents.chunking import chunk_sections
    from documents.embeddings.local import LocalEmbedder
    from documents.parsers import parse_file

    embedder = LocalEmbedder()
    embedder.count_tokens("load the tokenizer before the baseline")
    baseline = start_measuring()
    started = time.perf_counter()
    parsed = parse_file(path, path.name)
    # The default settings: chunks of at most min(400, 254) tokens, 40 overlap.
    chunks = sum(
        1
        for _ in chunk_sections(
            parsed.sections,
            max_tokens=min(400, embedder.max_input_tokens),
            overlap_tokens=40,
            count_tokens=embedder.count_tokens,
        )
    )
    return {"baseline_mb": baseline, "peak_mb": peak_mb(), "chunks": chunks, "seconds": time.perf_counter() - started}


def ocr(path: Path) -> dict:
    """Parse and chunk a scanned PDF: every page goes through OCR. The
    tokenizer-free counter keeps the figure about OCR; Tesseract runs in
    child processes, whose peak is reported apart."""
    import resource

    from documents.chunking import chunk_sections
    from documents.embeddings.base import estimate_tokens
    from documents.parsers import parse_file

    baseline = start_measuring()
    started = time.perf_counter()
    parsed = parse_file(path, path.name)
    chunks = sum(
        1 for _ in chunk_sections(parsed.sections, max_tokens=254, overlap_tokens=40, count_tokens=estimate_tokens)
    )
    seconds = time.perf_counter() - started
    return {
        "baseline_mb": baseline,
        "peak_mb": peak_mb(),
        "chunks": chunks,
        "seconds": seconds,
        "pages": parsed.metadata["page_count"],
        "pages_ocr": parsed.metadata["pages_ocr"],
        "tesseract_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def ingest(path: Path) -> dict:
    import django

    django.setup()
    from documents import services
    from documents.models import Chunk

    project = services.project_create(name=f"memory-{path.name}-{time.time()}", embedder="hash")
    with path.open("rb") as source:
        submission = services.document_submit(project=project, source=source, filename=path.name)
    submission.job.refresh_from_db()
    if submission.job.status != "running":
        raise SystemExit(f"job not admitted: {submission.job.status}")
    baseline = start_measuring()
    started = time.perf_counter()
    services.document_parse(document_id=submission.document.id, job_id=submission.job.id)
    seconds = time.perf_counter() - started
    submission.document.refresh_from_db()
    return {
        "baseline_mb": baseline,
        "peak_mb": peak_mb(),
        "seconds": seconds,
        "chunks": Chunk.objects.filter(document=submission.document).count(),
        "status": submission.document.status,
        "error": submission.document.error_message,
    }


if __name__ == "__main__":
    mode, target = sys.argv[1], Path(sys.argv[2])
    print(json.dumps({"parse": parse, "ingest": ingest, "ocr": ocr}[mode](target)))
