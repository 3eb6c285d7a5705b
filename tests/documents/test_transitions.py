"""The one place where statuses change: the transition tables, their guards,
and a check that no other code writes a status column."""

import ast
import itertools
import re
from pathlib import Path

import pytest

from documents import services
from documents.models import Chunk, Document
from documents.services import transitions
from tests.support.factories import make_project, markdown_document, submit_bytes

pytestmark = [pytest.mark.unit]

REPO = Path(__file__).resolve().parents[2]
DOCUMENT_STATUSES = list(Document.Status.values)
CHUNK_STATUSES = list(Chunk.Status.values)


def _illegal(table: dict, statuses: list[str]) -> list[tuple[str, str]]:
    legal = {(source, to) for to, sources in table.items() for source in sources}
    return [pair for pair in itertools.product(statuses, statuses) if pair not in legal]


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "to"), _illegal(transitions.DOCUMENT_TRANSITIONS, DOCUMENT_STATUSES))
def test_an_illegal_document_transition_raises_naming_the_document_and_both_statuses(source, to):
    document = submit_bytes(make_project(), markdown_document(), "a.md").document
    Document.objects.filter(id=document.id).update(status=source)
    with pytest.raises(
        transitions.IllegalTransition, match=f"document {document.id}: illegal status transition {source} -> {to}"
    ):
        transitions.document_transition(document_id=document.id, from_statuses=source, to=to, actor="system")
    assert Document.objects.get(id=document.id).status == source


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "to"), _illegal(transitions.CHUNK_TRANSITIONS, CHUNK_STATUSES))
def test_an_illegal_chunk_transition_raises_naming_both_statuses(source, to):
    with pytest.raises(transitions.IllegalTransition, match=f"chunk: illegal status transition {source} -> {to}"):
        transitions.chunks_transition(chunks=Chunk.objects.none(), from_statuses=source, to=to)


@pytest.mark.django_db
def test_a_document_transition_under_a_stale_generation_writes_nothing():
    document = submit_bytes(make_project(), markdown_document(), "a.md").document
    moved = transitions.document_transition(
        document_id=document.id,
        from_statuses="pending",
        to="cancelled",
        actor="system",
        generation=document.generation + 1,
    )
    assert moved is None
    assert Document.objects.get(id=document.id).status == "pending"


@pytest.mark.django_db
def test_a_document_transition_from_a_status_it_left_writes_nothing():
    document = submit_bytes(make_project(), markdown_document(), "a.md").document
    assert (
        transitions.document_transition(document_id=document.id, from_statuses="indexing", to="ready", actor="worker")
        is None
    )
    assert Document.objects.get(id=document.id).status == "pending"


@pytest.mark.django_db
def test_the_claim_and_store_statements_make_only_moves_the_table_allows():
    assert "pending" in transitions.CHUNK_TRANSITIONS["processing"]
    assert "processing" in transitions.CHUNK_TRANSITIONS["ready"]
    assert "processing" in transitions.CHUNK_TRANSITIONS["corrupted"]
    assert re.search(r"SET status = 'processing'.*c\.status = 'pending'", transitions._CLAIM_SQL, re.S)
    assert "c.status = 'processing'" in transitions._STORE_SQL


# --- Nothing else writes a status ---------------------------------------------------------

STATUS_TABLES = ("documents_document", "documents_chunk", "jobs_job")
# The transition functions, and the migrations that create the columns.
ALLOWED = {
    "documents/services/transitions.py",
    "jobs/services.py::job_transition",
}


def _status_writes(source: str, filename: str) -> list[str]:
    """Places in `source` that write a `status` column: `.update(status=...)`,
    `.status = ...` assignments, `update_fields` naming status, and SQL
    strings that SET or INSERT a status on one of the status tables."""
    found = []
    tree = ast.parse(source, filename)
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def where(node) -> str:
        scope = node
        while scope in parents and not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scope = parents[scope]
        name = scope.name if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef)) else "<module>"
        return f"{filename}::{name}:{node.lineno}"

    for node in ast.walk(tree):
        updating = (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("update", "bulk_update", "update_or_create")
        )
        if updating:
            names = {keyword.arg for keyword in node.keywords}
            fields_arg = [a for a in node.args if isinstance(a, (ast.List, ast.Tuple))]
            named = any(isinstance(e, ast.Constant) and e.value == "status" for a in fields_arg for e in a.elts)
            if "status" in names or named:
                found.append(where(node))
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Attribute) and target.attr == "status":
                    found.append(where(node))
        if (
            isinstance(node, ast.keyword)
            and node.arg == "update_fields"
            and any(isinstance(e, ast.Constant) and e.value == "status" for e in getattr(node.value, "elts", []))
        ):
            found.append(where(node))
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = " ".join(node.value.split()).lower()
            if any(table in text for table in STATUS_TABLES) and re.search(
                r"\bset\b[^;]*\bstatus\s*=|insert into \w+ \([^)]*\bstatus\b", text
            ):
                found.append(where(node))
    return found


def _allowed(place: str) -> bool:
    path, _, rest = place.partition("::")
    function = rest.split(":")[0]
    return path in ALLOWED or f"{path}::{function}" in ALLOWED


def _project_sources():
    for top in ("common", "documents", "jobs", "mirage", "bench"):
        for path in sorted((REPO / top).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if "/migrations/" not in relative:
                yield relative, path.read_text()


def test_no_code_outside_the_transition_functions_writes_a_status_column():
    stray = [
        place
        for relative, source in _project_sources()
        for place in _status_writes(source, relative)
        if not _allowed(place)
    ]
    # bench/ builds its data sets with direct writes on purpose (it measures,
    # it does not run the pipeline): list them so a new one is still seen.
    stray = [place for place in stray if not place.startswith("bench/")]
    assert stray == []


@pytest.mark.parametrize(
    "snippet",
    [
        "Document.objects.filter(id=1).update(status='ready')\n",
        "document.status = 'ready'\ndocument.save(update_fields=['status'])\n",
        "Chunk.objects.filter(id__in=ids).update(status=Chunk.Status.ERROR, error='x')\n",
        "cursor.execute(\"UPDATE documents_chunk SET status = 'ready' WHERE id = %s\", [1])\n",
        "Job.objects.filter(id=1).update(status='completed')\n",
    ],
)
def test_the_stray_write_check_finds_a_new_stray_write(snippet):
    assert _status_writes(snippet, "documents/new_module.py")


def test_the_transition_functions_are_the_only_allowed_writers():
    writes = {
        place.rsplit(":", 1)[0]
        for relative, source in _project_sources()
        for place in _status_writes(source, relative)
        if _allowed(place)
    }
    assert {place for place in writes if place.startswith("jobs/")} == {"jobs/services.py::job_transition"}
    assert writes - {"jobs/services.py::job_transition"} <= {
        f"documents/services/transitions.py::{name}"
        for name in ("document_transition", "chunks_transition", "<module>", "chunks_store_vectors")
    }


def test_services_reexports_the_public_names():
    assert services.document_transition is transitions.document_transition
