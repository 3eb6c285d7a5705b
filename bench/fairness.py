"""Rows 8 and 9: fair share and priority, through real workers with the
hash embedder.

Row 8: project A queues a 5,000-chunk document and 200 small ones; once A's
embedding is under way, project B uploads one small document. Measured: B's
time from upload to final, and whether A was still indexing then.

Row 9: a `high` upload behind a 5,000-chunk `normal` document whose
embedding is under way. Measured: the high document's time from upload to
final, against the normal document's own time to final.
"""

from __future__ import annotations

import time

from bench import data
from bench.processes import ProcessGroup
from bench.report import Result, say

BIG_SECTIONS = 5000
SMALL_DOCUMENTS = 200


def markdown(tag: str, sections: int) -> bytes:
    """Every section distinct text (no embedding-cache hits), one chunk each."""
    parts = [f"# {tag}\n"]
    for section in range(sections):
        words = " ".join(f"{tag}x{section}y{i}" for i in range(30))
        parts.append(f"\n## Part {section}\n\n{words}.\n")
    return "".join(parts).encode()


def _wait(condition, *, timeout: float, what: str) -> None:
    from django.db import connection

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not reached within {timeout} s")
        time.sleep(0.2)
        connection.close_if_unusable_or_obsolete()


def _embedding_started(document_id: int) -> bool:
    from documents.models import Chunk

    return Chunk.objects.filter(document_id=document_id, status="ready").exists()


def _submit(project, content: bytes, name: str, **kwargs):
    import io

    from documents import services

    try:
        return services.document_submit(project=project, source=io.BytesIO(content), filename=name, **kwargs)
    except TypeError:  # code without priorities (the "before" run)
        return services.document_submit(project=project, source=io.BytesIO(content), filename=name)


def run(*, quick: bool) -> list[Result]:
    from documents import services
    from documents.models import Document

    big_sections = 500 if quick else BIG_SECTIONS
    small_documents = 20 if quick else SMALL_DOCUMENTS
    results = []
    with ProcessGroup("fairness") as group:
        say("  starting ingest (prefork 1) and embed (threads, concurrency 8) workers")
        group.pipeline_workers(pool="threads", concurrency=8)

        a = services.project_create(name="fair-a", embedder="hash")
        b = services.project_create(name="fair-b", embedder="hash")
        say(f"  project A: one {big_sections}-section document, then {small_documents} small ones")
        big = _submit(a, markdown("big", big_sections), "big.md")
        for number in range(small_documents):
            _submit(a, markdown(f"small{number}", 3), f"small-{number}.md")
        _wait(lambda: _embedding_started(big.document.id), timeout=1800, what="A's embedding under way")
        say("  project B uploads one small document")
        uploaded = time.time()
        late = _submit(b, markdown("late", 3), "late.md")
        times = data.wait_job(late.job.id, timeout=3600)
        b_seconds = times.finished - uploaded
        a_left = Document.objects.filter(project=a).exclude(status__in=Document.FINAL_STATUSES).count()
        big_status = Document.objects.get(id=big.document.id).status
        say(
            f"    B final ({times.status}) {b_seconds:.1f} s after upload; A then had {a_left} documents "
            f"not final (big document {big_status})"
        )
        big_times = data.wait_job(big.job.id, timeout=3600)
        big_seconds = big_times.finished - big_times.job_created
        say(f"    A's big document ({big_times.chunks} chunks) final {big_seconds:.1f} s after upload")
        results.append(
            Result(
                row=f"11 fairness: B's 4-chunk upload behind A's {big_times.chunks}-chunk document and "
                f"{small_documents} small ones, time to final",
                measured=f"{b_seconds:.1f} s",
                baseline=f"{big_seconds:.1f} s",
                ratio=b_seconds / big_seconds,
                goal="B final while A indexes",
                met=a_left > 0,
                notes=[
                    f"baseline: A's big document, upload to final; A had {a_left} documents not final when B was final"
                ],
            )
        )
        _wait(
            lambda: not Document.objects.exclude(status__in=Document.FINAL_STATUSES).exists(),
            timeout=3600,
            what="everything final",
        )

        p = services.project_create(name="prio", embedder="hash")
        say(f"  priority: a {big_sections}-section normal document, then a high-priority upload")
        normal = _submit(p, markdown("normal", big_sections), "normal.md")
        _wait(lambda: _embedding_started(normal.document.id), timeout=1800, what="normal embedding under way")
        uploaded = time.time()
        urgent = _submit(p, markdown("urgent", 3), "urgent.md", priority="high")
        urgent_times = data.wait_job(urgent.job.id, timeout=3600)
        urgent_seconds = urgent_times.finished - uploaded
        normal_times = data.wait_job(normal.job.id, timeout=3600)
        normal_seconds = normal_times.finished - normal_times.job_created
        say(
            f"    high final {urgent_seconds:.1f} s after upload; the normal document "
            f"({normal_times.chunks} chunks) {normal_seconds:.1f} s after its upload"
        )
        results.append(
            Result(
                row=f"12 priority: a high 4-chunk upload behind a {normal_times.chunks}-chunk normal document, "
                "time to final",
                measured=f"{urgent_seconds:.1f} s",
                baseline=f"{normal_seconds:.1f} s",
                ratio=urgent_seconds / normal_seconds,
                goal="long before the normal one",
                met=urgent_times.finished < normal_times.finished,
                notes=["baseline: the normal document, upload to final"],
            )
        )
    return results
