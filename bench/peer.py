"""Row 13: Mirage against a peer, LlamaIndex's IngestionPipeline, on the
same ten corpus files, with the same model (all-MiniLM-L6-v2 on the CPU)
and the same PostgreSQL, in tokens per second (chunk sizes differ; tokens
are the fair unit).

Mirage: the Procfile topology (an `ingest` worker, prefork x1, and an
`embed` worker, threads x8, with the `local` embedder), the model loaded by
a warm-up document first; the clock runs from the first upload to the last
document final. Tokens: each stored chunk's own token count (the model's
word pieces, at most the 254 it reads).

Peer: bench/peer_llamaindex.py in a virtualenv of its own
(`.mirage/bench/peer-venv`, built here from bench/peer-requirements.txt
and rebuilt when that file changes; never the product's dependencies), one
process, a SentenceSplitter cut to the same 254 word pieces and 40 of
overlap, HuggingFaceEmbedding in batches of 16, PGVectorStore with an HNSW
index in a table of its own (`data_peer_llamaindex` in the benchmark
database). Its clock runs from reading the files to the run's return; its
model is loaded before.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

from bench import data, env
from bench.processes import ProcessGroup
from bench.report import Result, say

GOAL = 1.0
REQUIREMENTS = Path(__file__).with_name("peer-requirements.txt")
SCRIPT = Path(__file__).with_name("peer_llamaindex.py")
VENV = env.WORK_DIR / "peer-venv"
PEER_TABLE = "peer_llamaindex"
# Ten real documents of the corpus: prose, code-heavy Markdown, a Chinese
# text, and two plain texts.
FILES = [
    "markdown/fastapi-release-notes.md",
    "markdown/pyguide.md",
    "markdown/pgvector-README.md",
    "markdown/fastapi-sql-databases.md",
    "markdown/fastapi-async-zh.md",
    "markdown/httpx-transports.md",
    "markdown/markdown-style.md",
    "markdown/jekyll-front-matter.md",
    "text/alice29.txt",
    "text/asyoulik.txt",
]
WARMUP = "markdown/jekyll-front-matter.md"


def peer_python() -> Path:
    """The peer virtualenv's Python, built (or rebuilt, when the requirements
    changed) from bench/peer-requirements.txt."""
    stamp = VENV / "requirements.sha256"
    wanted = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    python = VENV / "bin" / "python"
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    say(f"  building the peer virtualenv in {VENV} from {REQUIREMENTS.name}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-input", "-r", str(REQUIREMENTS)],
        check=True,
    )
    stamp.write_text(wanted)
    return python


def run_peer(python: Path) -> dict:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS data_{PEER_TABLE}")
    params = connection.get_connection_params()
    command = [
        str(python),
        str(SCRIPT),
        "--database",
        params["dbname"],
        "--host",
        params.get("host") or "127.0.0.1",
        "--port",
        str(params.get("port") or 5432),
        "--user",
        params.get("user") or "postgres",
        "--password",
        params.get("password") or "",
        "--table",
        PEER_TABLE,
        *[str(env.CORPUS / name) for name in FILES],
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False, env=_peer_environment())
    if completed.returncode != 0:
        raise RuntimeError(f"the peer failed:\n{completed.stderr[-4000:]}")
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM data_{PEER_TABLE} WHERE embedding IS NOT NULL")
        figures["rows_stored"] = cursor.fetchone()[0]
    return figures


def _peer_environment() -> dict[str, str]:
    import os

    # Nothing of the product's environment (Django settings, its virtualenv).
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    return {name: os.environ[name] for name in keep if name in os.environ} | {"PYTHONUNBUFFERED": "1"}


def run_mirage() -> dict:
    from documents import services
    from documents.models import Chunk, Document
    from jobs.models import Job

    with ProcessGroup("peer-mirage") as group:
        say("  Mirage: starting ingest (prefork 1) and embed (threads 8) workers")
        group.pipeline_workers(pool="threads", concurrency=8)
        warmup = services.project_create(name="peer-warmup", embedder="local")
        say("  Mirage: warm-up document (loads the model in the embed worker)")
        data.wait_job(data.submit(warmup, (env.CORPUS / WARMUP).read_bytes(), "warmup.md").job.id, timeout=600)
        project = services.project_create(name="peer-mirage", embedder="local")
        say(f"  Mirage: {len(FILES)} files ...")
        started = time.time()
        job_ids = [data.submit(project, (env.CORPUS / name).read_bytes(), Path(name).name).job.id for name in FILES]
        for job_id in job_ids:
            data.wait_job(job_id, timeout=3600)
        finished = max(Job.objects.filter(id__in=job_ids).values_list("completed_at", flat=True)).timestamp()
    documents = Document.objects.filter(project=project)
    statuses = sorted(set(documents.values_list("status", flat=True)))
    chunks = Chunk.objects.filter(document__project=project, status__in=(Chunk.Status.READY, Chunk.Status.CORRUPTED))
    tokens = sum(min(count, 254) for count in chunks.values_list("token_count", flat=True))
    return {"seconds": finished - started, "chunks": chunks.count(), "tokens": tokens, "statuses": statuses}


def run(*, quick: bool) -> list[Result]:
    if quick:
        say("  (quick: the same run; this row has no smaller size)")
    python = peer_python()
    mirage = run_mirage()
    mirage_rate = mirage["tokens"] / mirage["seconds"]
    say(
        f"    Mirage: {mirage['chunks']} chunks, {mirage['tokens']} tokens in {mirage['seconds']:.1f} s "
        f"({mirage_rate:.0f} tokens/s); documents {', '.join(mirage['statuses'])}"
    )
    say("  peer: LlamaIndex IngestionPipeline in its own virtualenv ...")
    peer = run_peer(python)
    peer_rate = peer["tokens"] / peer["seconds"]
    say(
        f"    peer: {peer['nodes']} nodes ({peer['rows_stored']} rows stored), {peer['tokens']} tokens in "
        f"{peer['seconds']:.1f} s ({peer_rate:.0f} tokens/s); model load {peer['load_seconds']:.1f} s, not counted"
    )
    ratio = mirage_rate / peer_rate
    return [
        Result(
            row=f"13 peer: Mirage (Procfile topology) vs LlamaIndex IngestionPipeline, {len(FILES)} corpus files, "
            "local model, tokens/s",
            measured=f"{mirage_rate:.0f} tokens/s",
            baseline=f"{peer_rate:.0f} tokens/s",
            ratio=ratio,
            goal=f">= {GOAL:.1f}",
            met=ratio >= GOAL,
            notes=[
                f"Mirage {mirage['chunks']} chunks, {mirage['tokens']} tokens, {mirage['seconds']:.1f} s from the "
                f"first upload to the last document final (documents {', '.join(mirage['statuses'])}); peer "
                f"{peer['nodes']} nodes, {peer['tokens']} tokens, {peer['seconds']:.1f} s from reading the files "
                f"to its return, {peer['rows_stored']} vectors in data_{PEER_TABLE}"
            ],
        )
    ]
