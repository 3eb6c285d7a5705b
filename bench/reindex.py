"""Row 6: reindexing an unchanged document must not call the embedding
provider, and should cost a fraction of the first index. A real corpus
file through real workers, with an embedder that counts its calls."""

from __future__ import annotations

from bench import data, embedders, env
from bench.processes import ProcessGroup
from bench.report import Result, say

SOURCE = "markdown/fastapi-release-notes.md"
QUICK_SOURCE = "markdown/pyguide.md"


def run(*, quick: bool) -> list[Result]:
    from documents import services
    from documents.models import Document

    source = env.CORPUS / (QUICK_SOURCE if quick else SOURCE)
    with ProcessGroup("reindex") as group:
        say("  starting ingest (prefork 1) and embed (threads, concurrency 8) workers")
        group.pipeline_workers(pool="threads", concurrency=8)
        project = services.project_create(name="reindex", embedder="bench.embedders.CountingEmbedder")
        embedders.reset_counts()
        say(f"  first index of {source.name}")
        first = data.wait_job(data.submit(project, source.read_bytes(), source.name).job.id, timeout=900)
        first_calls, first_texts = embedders.counts()
        say(
            f"    {first.status}, {first.chunks} chunks, {first.from_job_created:.1f} s; "
            f"{first_calls} provider calls for {first_texts} texts"
        )
        embedders.reset_counts()
        say("  reindex of the unchanged file")
        job = services.document_reindex(document=Document.objects.get(id=first.document_id))
        second = data.wait_job(job.id, timeout=900)
        calls, texts = embedders.counts()
        say(
            f"    {second.status}, {second.chunks} chunks, {second.from_job_created:.1f} s; "
            f"{calls} provider calls for {texts} texts"
        )
    if second.status != first.status:
        raise RuntimeError(f"reindex ended {second.status}, first index {first.status}")
    return [
        Result(
            row=f"6 reindex unchanged ({first.chunks} chunks): provider calls, reindex vs first index",
            measured=f"{calls} calls",
            baseline=f"{first_calls} calls",
            ratio=calls / first_calls,
            goal="0 calls",
            met=calls == 0,
            notes=[f"first index: {first_calls} provider calls embedding {first_texts} texts"],
        ),
        Result(
            row=f"6 reindex unchanged ({first.chunks} chunks): time, reindex vs first index",
            measured=f"{second.from_job_created:.1f} s",
            baseline=f"{first.from_job_created:.1f} s",
            ratio=second.from_job_created / first.from_job_created,
            goal="stated",
            met=None,
            notes=["from job creation to the job's end, both runs through the same ingest and embed workers"],
        ),
    ]
