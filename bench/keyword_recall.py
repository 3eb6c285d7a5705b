"""Row 9: keyword search recall on the corpus's English (alice29.txt,
asyoulik.txt), Japanese (the Japanese titles in fastapi-release-notes.md)
and Chinese (fastapi-async-zh.md) text, before and after keyword search
ranked by any word and indexed text without spaces by bigrams.

The documents are parsed and chunked as the product does (the `hash`
embedder's token counter) into one project. A hit is relevant when its
chunk holds what the query asks for (a regular expression per query, on
the chunk's text: every key word, or the Chinese or Japanese word).
Recall@10 = relevant hits in the top 10 / min(10, relevant chunks).
"Before" is the previous query: web-search syntax with every word
required, on the `simple` tsvector of the text alone."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from bench.env import CORPUS
from bench.report import Result, say

K = 10
FILES = ["text/alice29.txt", "text/asyoulik.txt", "markdown/fastapi-release-notes.md", "markdown/fastapi-async-zh.md"]
# (language, query, what a relevant chunk holds)
QUERIES = [
    ("English", "why did the rabbit hurry", r"(?=.*\brabbit)(?=.*\bhurr)"),
    ("English", "the queen playing croquet", r"(?=.*\bqueen)(?=.*\bcroquet)"),
    ("English", "mock turtle soup", r"(?=.*\bturtle)(?=.*\bsoup)"),
    ("English", "cheshire cat grinning", r"(?=.*\bcheshire)(?=.*\bgrin)"),
    ("English", "orlando in the forest of arden", r"(?=.*\borlando)(?=.*\barden)"),
    ("English", "what does rosalind say to the duke", r"(?=.*\brosalind)(?=.*\bduke)"),
    ("English", '"white rabbit"', r"(?=.*\bwhite rabbit)"),
    ("Japanese", "フレームワーク", r"(?=.*フレームワーク)"),
    ("Japanese", "パフォーマンス比較", r"(?=.*パフォーマンス比較)"),
    ("Japanese", "入門", r"(?=.*入門)"),
    ("Chinese", "异步", r"(?=.*异步)"),
    ("Chinese", "并发", r"(?=.*并发)"),
    ("Chinese", "协程", r"(?=.*协程)"),
    ("Chinese", "路径操作", r"(?=.*路径操作)"),
    ("Chinese", "数据库", r"(?=.*数据库)"),
    ("Chinese", "异步代码", r"(?=.*异步代码)"),
]

BEFORE_SQL = """
    SELECT c.id FROM documents_chunk c JOIN documents_document d ON d.id = c.document_id,
           websearch_to_tsquery('simple', %(query)s) q
     WHERE d.project_id = %(project)s AND to_tsvector('simple', c.content) @@ q
     ORDER BY ts_rank_cd(to_tsvector('simple', c.content), q) DESC, c.id
     LIMIT %(k)s
"""


def _load(project) -> int:
    import hashlib

    from django.utils import timezone

    from documents.chunking import chunk_sections
    from documents.embeddings.hashing import HashEmbedder
    from documents.models import Chunk, Document
    from documents.parsers import parse_file

    embedder = HashEmbedder()
    count = 0
    for number, name in enumerate(FILES):
        path = CORPUS / name
        parsed = parse_file(Path(path), path.name)
        document = Document.objects.create(
            project=project,
            filename=path.name,
            file=f"bench/{path.name}",
            file_type=parsed.file_type,
            size_bytes=path.stat().st_size,
            content_sha256=f"{number:064d}",
            status=Document.Status.READY,
            indexed_at=timezone.now(),
        )
        drafts = chunk_sections(parsed.sections, max_tokens=400, overlap_tokens=40, count_tokens=embedder.count_tokens)
        chunks = [
            Chunk(
                document=document,
                position=draft.position,
                content=draft.content,
                content_sha256=hashlib.sha256(draft.content.encode()).hexdigest(),
                token_count=draft.token_count,
                structure=draft.structure,
                start_offset=draft.start,
                end_offset=draft.end,
                status=Chunk.Status.PENDING,
            )
            for draft in drafts
        ]
        Chunk.objects.bulk_create(chunks)
        count += len(chunks)
    return count


def run(*, quick: bool) -> list[Result]:
    from django.db import connection

    from documents import search, services
    from documents.models import Chunk

    project = services.project_create(name="keyword-recall", embedder="hash")
    say(f"  chunking {len(FILES)} corpus files: {_load(project)} chunks")
    texts = dict(Chunk.objects.filter(document__project=project).values_list("id", "content"))
    by_language: dict[str, list[tuple[float, float]]] = {}
    for language, query, pattern in QUERIES:
        relevant = {chunk_id for chunk_id, text in texts.items() if re.match(pattern, text.lower(), re.S)}
        if not relevant:
            say(f"    {language} {query!r}: no relevant chunk in the corpus, skipped")
            continue
        with connection.cursor() as cursor:
            cursor.execute(BEFORE_SQL, {"query": query, "project": project.id, "k": K})
            before = [row[0] for row in cursor.fetchall()]
        after = [hit.chunk_id for hit in search.keyword(project=project, query=query, k=K)]
        wanted = min(K, len(relevant))
        recall_before = len(set(before) & relevant) / wanted
        recall_after = len(set(after) & relevant) / wanted
        by_language.setdefault(language, []).append((recall_before, recall_after))
        say(
            f"    {language} {query!r}: {len(relevant)} relevant chunks; recall@{K} before {recall_before:.2f} "
            f"({len(before)} hits), after {recall_after:.2f} ({len(after)} hits)"
        )
    results = []
    for language, pairs in by_language.items():
        before = statistics.mean(pair[0] for pair in pairs)
        after = statistics.mean(pair[1] for pair in pairs)
        results.append(
            Result(
                row=f"9 keyword recall@{K}, {language} ({len(pairs)} queries): after vs before",
                measured=f"{after:.3f}",
                baseline=f"{before:.3f}",
                ratio=after / before if before else None,
                goal="higher than before",
                met=after > before,
            )
        )
    return results
