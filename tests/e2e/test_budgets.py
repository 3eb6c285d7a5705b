"""Resource budgets of a parse, through the real pipeline: each hostile file
ends `error` with a reason naming the budget and its job `failed` with
`error_type` `budget_<name>`; the worker stays alive and the next document
ends `ready`. Peak memory of the worker process and of the parse children
is recorded as a figure."""

from __future__ import annotations

import io
import resource
import zipfile

import pytest

from documents.models import Chunk, Document
from documents.parsers.budgets import BudgetExceeded, ParseBudget, parse_file_within
from jobs.models import Job
from tests.documents.test_parsers import build_epub, xhtml
from tests.support import figures
from tests.support.factories import CORPUS, make_project, markdown_document, submit_bytes
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def pdf_with_pages(count: int) -> bytes:
    """A valid PDF of `count` pages, each with a line of text."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for page in range(count):
        stream = f"BT /F1 12 Tf 72 720 Td (Page {page + 1} of the long report) Tj ET".encode()
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
        content = len(objects)
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {content} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>"
        )
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {count} >>"
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n{body}\nendobj\n".encode())
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def zip_bomb_epub() -> bytes:
    """An EPUB whose one chapter inflates from ~30 KB to 30 MB."""
    data = build_epub({"c1.xhtml": xhtml("<p>short</p>")}, ["c1.xhtml"])
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            content = source.read(info)
            if info.filename.endswith("c1.xhtml"):
                content = content.replace(b"short", b"a" * (30 * 1024 * 1024))
                target.writestr(info.filename, content, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
            else:
                target.writestr(info, content)
    return out.getvalue()


LAUGHS = """<?xml version="1.0" encoding="utf-8"?>
<!DOCTYPE html [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<html xmlns="http://www.w3.org/1999/xhtml"><head><title>Laughs</title></head>
<body><p>&lol3;</p></body></html>"""


def entity_epub() -> bytes:
    return build_epub({"c1.xhtml": LAUGHS}, ["c1.xhtml"])


def nested_html() -> bytes:
    return ("<html><body>" + "<div>" * 20_000 + "deep" + "</div>" * 20_000 + "</body></html>").encode()


def wait_final(document_id: int) -> Document:
    return wait_until(
        lambda: (d := Document.objects.get(id=document_id)).status in Document.FINAL_STATUSES and d,
        timeout=600,
        interval=0.2,
        message=f"document {document_id} final",
    )


CASES = [
    ("zip-bomb.epub", zip_bomb_epub, "budget_decompression", "decompression-bomb guard"),
    ("laughs.epub", entity_epub, "budget_xml_entities", "XML entity expansion is refused"),
    ("long-report.pdf", lambda: pdf_with_pages(3000), "budget_pages", "MIRAGE_MAX_PAGES is 2000"),
    ("nested.html", nested_html, "budget_nesting", "nesting limit"),
]


def test_each_hostile_file_ends_error_naming_its_budget_and_the_next_document_is_ready(worker, settings):
    settings.MIRAGE_MAX_PAGES = 2000
    project = make_project()
    outcomes = {}
    for number, (name, build, error_type, words) in enumerate(CASES):
        hostile = submit_bytes(project, build(), name)
        following = submit_bytes(project, markdown_document(sections=2 + number), f"after-{name}.md")
        document = wait_final(hostile.document.id)
        job = Job.objects.get(id=hostile.job.id)
        assert document.status == "error", (name, document.error_message)
        assert words in document.error_message, (name, document.error_message)
        assert (job.status, job.error_type) == ("failed", error_type), (name, job.error_type, job.error_message)
        assert wait_final(following.document.id).status == "ready"
        outcomes[name] = document.error_message
    # The worker runs in this process (tests/conftest.py): its peak over the
    # session so far, the hostile files included.
    worker_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    figures.record("parse budgets", worker_peak_rss_mb=worker_peak, reasons=outcomes)


def test_a_file_that_needs_more_memory_than_the_budget_ends_error_and_the_worker_goes_on(worker, settings):
    settings.MIRAGE_PARSE_MEMORY_MB = 60
    project = make_project()
    heavy = submit_bytes(project, (CORPUS / "pdf" / "GeoTopo-komprimiert.pdf").read_bytes(), "heavy.pdf")
    document = wait_final(heavy.document.id)
    assert document.status == "error"
    assert document.error_message == "needs more than 60 MB to parse (MIRAGE_PARSE_MEMORY_MB)"
    assert Job.objects.get(id=heavy.job.id).error_type == "budget_memory"
    settings.MIRAGE_PARSE_MEMORY_MB = 1024
    after = submit_bytes(project, markdown_document(sections=3), "after.md")
    assert wait_final(after.document.id).status == "ready"


def test_a_document_over_the_chunk_budget_ends_error(worker, settings):
    settings.MIRAGE_MAX_CHUNKS_PER_DOCUMENT = 5
    project = make_project()
    large = submit_bytes(project, markdown_document(sections=12), "large.md")
    document = wait_final(large.document.id)
    assert document.status == "error"
    assert "more than 5 chunks (MIRAGE_MAX_CHUNKS_PER_DOCUMENT is 5)" in document.error_message
    assert Job.objects.get(id=large.job.id).error_type == "budget_chunks"


def test_a_document_over_the_extracted_characters_budget_ends_error_and_the_next_is_ready(worker, settings):
    settings.MIRAGE_MAX_EXTRACTED_CHARACTERS = 2000
    project = make_project()
    large = submit_bytes(project, markdown_document(sections=40), "wordy.md")
    document = wait_final(large.document.id)
    assert document.status == "error"
    assert document.error_message == (
        "extracts more than 2000 characters of text (MIRAGE_MAX_EXTRACTED_CHARACTERS is 2000)"
    )
    assert Job.objects.get(id=large.job.id).error_type == "budget_characters"
    assert not Chunk.objects.filter(document=document).exists()
    small = submit_bytes(project, markdown_document(sections=1), "short.md")
    assert wait_final(small.document.id).status == "ready"


def test_the_character_budget_counts_every_section_in_and_out_of_the_child(tmp_path):
    path = tmp_path / "short.pdf"
    path.write_bytes(pdf_with_pages(3))
    total = sum(len(section.text) for section in parse_file_within(path, "short.pdf", budget=ParseBudget()).sections)
    assert total > 0
    for memory_mb in (1024, 0):
        within = parse_file_within(path, "short.pdf", budget=ParseBudget(memory_mb=memory_mb, max_characters=total))
        assert sum(len(section.text) for section in within.sections) == total
        over = parse_file_within(path, "short.pdf", budget=ParseBudget(memory_mb=memory_mb, max_characters=total - 1))
        with pytest.raises(BudgetExceeded, match=rf"MIRAGE_MAX_EXTRACTED_CHARACTERS is {total - 1}\)") as raised:
            list(over.sections)
        assert raised.value.error_type == "budget_characters"


def test_the_budget_wrapper_streams_sections_from_the_child_and_counts_pages(tmp_path):
    path = tmp_path / "short.pdf"
    path.write_bytes(pdf_with_pages(3))
    parsed = parse_file_within(path, "short.pdf", budget=ParseBudget(memory_mb=1024, max_pages=3))
    assert [section.structure["page"] for section in parsed.sections] == [1, 2, 3]
    assert parsed.metadata["page_count"] == 3
    with pytest.raises(BudgetExceeded, match=r"more than 2 pages \(3; MIRAGE_MAX_PAGES is 2\)"):
        parse_file_within(path, "short.pdf", budget=ParseBudget(memory_mb=1024, max_pages=2))
    # Without a memory budget the file is parsed in this process, same checks.
    with pytest.raises(BudgetExceeded):
        parse_file_within(path, "short.pdf", budget=ParseBudget(max_pages=2))
