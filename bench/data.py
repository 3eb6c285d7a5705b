"""Test data for the benchmarks: bulk loading with COPY, text from the
corpus, and running one document through the pipeline."""

from __future__ import annotations

import functools
import io
import json
import random
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from bench import env

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{1,}")


def copy_rows(table: str, columns: Sequence[str], rows: Iterable[Sequence]) -> int:
    """COPY rows into a table; values are written as text (None is NULL,
    dicts become JSON). Returns the number of rows."""
    from django.db import connection

    count = 0
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([_copy_value(value) for value in row])
            count += 1
    return count


def _copy_value(value):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def vector_text(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


CHUNK_COLUMNS = (
    "document_id",
    "position",
    "content",
    "content_sha256",
    "token_count",
    "structure",
    "status",
    "embedding",
    "embedding_model",
    "attempts",
    "error",
    "created_at",
    "updated_at",
    "dispatched_at",
    # NOT NULL without a database default (Django's default is not one):
    # COPY must name it.
    "next_embedding_model",
)


@functools.cache
def corpus_words(limit: int | None = None) -> list[str]:
    """Words of the corpus's English prose (plain text and Markdown), in
    reading order: real vocabulary with real frequencies. Read once per
    process; callers must not change the list."""
    words: list[str] = []
    for folder in ("text", "markdown"):
        for path in sorted((env.CORPUS / folder).glob("*")):
            if path.name.endswith("-zh.md"):
                continue
            words.extend(_WORD.findall(path.read_text(encoding="utf-8", errors="replace")))
            if limit and len(words) >= limit:
                return words[:limit]
    return words


def word_windows(words: list[str], count: int, length: int, seed: int) -> list[str]:
    """`count` runs of `length` consecutive corpus words at random offsets,
    each made unique by a numbered tag so no two texts are equal."""
    rng = random.Random(seed)
    top = len(words) - length
    texts = []
    for number in range(count):
        start = rng.randrange(top)
        texts.append(" ".join(words[start : start + length]) + f" s{seed}n{number}")
    return texts


@dataclass(frozen=True)
class RunTimes:
    """Wall-clock times (Python's clock in the processes that wrote them) of
    one document run, in seconds since the epoch."""

    document_id: int
    status: str
    chunks: int
    job_created: float
    job_started: float
    parsing_finished: float
    finished: float

    @property
    def from_dispatch(self) -> float:
        """From the end of parsing (the chunks' insert, commit and chord
        dispatch follow) to the document's final status."""
        return self.finished - self.parsing_finished

    @property
    def from_job_start(self) -> float:
        return self.finished - self.job_started

    @property
    def from_job_created(self) -> float:
        return self.finished - self.job_created


def submit(project, content: bytes, filename: str):
    from documents import services

    return services.document_submit(project=project, source=io.BytesIO(content), filename=filename)


def wait_job(job_id: int, *, timeout: float) -> RunTimes:
    """Wait until the job is final and return the times of its run."""
    from django.db import connection

    from documents.models import Chunk, Document
    from jobs.models import Job

    deadline = time.monotonic() + timeout
    while True:
        job = Job.objects.get(id=job_id)
        if job.is_final:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} not final within {timeout} s: {job.status} {job.progress_message}")
        time.sleep(0.1)
        connection.close_if_unusable_or_obsolete()
    document = Document.objects.get(id=job.subject_id)
    finished = document.embedding_finished_at or job.completed_at
    return RunTimes(
        document_id=document.id,
        status=document.status,
        chunks=Chunk.objects.filter(document=document).count(),
        job_created=job.created_at.timestamp(),
        job_started=job.started_at.timestamp(),
        parsing_finished=document.parsing_finished_at.timestamp(),
        finished=finished.timestamp(),
    )


def chunk_texts(content: bytes, filename: str, embedder: str) -> list[str]:
    """The chunk texts the pipeline will store for this file, computed in
    this process with the same parser, chunker and token counter."""
    import tempfile
    from pathlib import Path

    from django.conf import settings

    from documents.chunking import chunk_sections
    from documents.embeddings import get_embedder
    from documents.parsers import parse_file
    from documents.services.parsing import _effective_chunk_tokens

    provider = get_embedder(embedder)
    with tempfile.TemporaryDirectory(dir=env.WORK_DIR) as directory:
        path = Path(directory) / filename
        path.write_bytes(content)
        parsed = parse_file(path, filename)
        return [
            draft.content
            for draft in chunk_sections(
                parsed.sections,
                max_tokens=_effective_chunk_tokens(provider),
                overlap_tokens=settings.MIRAGE_CHUNK_OVERLAP,
                count_tokens=provider.count_tokens,
            )
        ]


def count_chunks(content: bytes, filename: str, embedder: str) -> int:
    return len(chunk_texts(content, filename, embedder))
