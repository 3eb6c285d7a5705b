"""Flower as `make run` starts it (`celery flower --conf=mirage/flowerconfig.py`):
basic auth on the UI and the API, and the pipeline's tasks visible with
id-only arguments."""

from __future__ import annotations

import ast
import sys
import uuid

import httpx
import pytest
from django.conf import settings

from documents.models import Chunk, Document
from mirage.celery import app as celery_app
from tests.support.factories import make_project, markdown_document, submit_bytes
from tests.support.processes import Stack, free_port
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

CREDENTIALS = ("flower-test", "a-test-password-1234")
PROBE_TASK = "tests.flower_probe"


@pytest.fixture(scope="module")
def flower(django_db_setup, tmp_path_factory):
    stack = Stack(
        tmp_path_factory.mktemp("flower"),
        MIRAGE_REDIS_URL=settings.MIRAGE_REDIS_URL,
        MIRAGE_FLOWER_BASIC_AUTH=":".join(CREDENTIALS),
        MIRAGE_FLOWER_ADDRESS="127.0.0.1",
        MIRAGE_FLOWER_PORT=str(free_port()),
    )
    # Set, it would open Flower's API to anyone.
    stack.env.pop("FLOWER_UNAUTHENTICATED_API", None)
    base_url = f"http://127.0.0.1:{stack.env['MIRAGE_FLOWER_PORT']}"
    try:
        stack.spawn(
            "flower", [sys.executable, "-m", "celery", "-A", "mirage", "flower", "--conf=mirage/flowerconfig.py"]
        )
        wait_until(lambda: _answers(base_url), timeout=60, interval=0.2, message=f"Flower answers on {base_url}")
        yield base_url
    finally:
        stack.stop_all()
        print(stack.log("flower")[-3000:])


def _answers(base_url: str) -> bool:
    try:
        httpx.get(base_url, timeout=2)
    except httpx.TransportError:
        return False
    return True


def authenticated(base_url: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, auth=CREDENTIALS, timeout=30)


def _send_probe(task_id: str) -> None:
    with celery_app.events.default_dispatcher() as dispatcher:
        dispatcher.send(
            "task-sent",
            uuid=task_id,
            name=PROBE_TASK,
            args="()",
            kwargs="{}",
            retries=0,
            eta=None,
            expires=None,
            queue="ingest",
            exchange="",
            routing_key="ingest",
            root_id=task_id,
            parent_id=None,
        )


def wait_until_flower_sees_events(base_url: str) -> None:
    """Flower learns of tasks only from events sent while it listens; a probe
    event, sent again until Flower shows it, proves it listens."""
    probe_id = str(uuid.uuid4())
    with authenticated(base_url) as client:

        def seen() -> bool:
            _send_probe(probe_id)
            return client.get(f"/api/task/info/{probe_id}").status_code == 200

        wait_until(seen, timeout=60, interval=0.5, message="Flower receives task events")


def test_flower_refuses_anonymous_requests_to_the_ui_and_the_api(flower):
    for path in ["/", "/workers", "/tasks", "/api/workers", "/api/tasks", "/api/queues/length"]:
        response = httpx.get(f"{flower}{path}", timeout=30)
        assert response.status_code == 401, (path, response.status_code)
        if not path.startswith("/api/"):
            # The browser's login prompt; the API answers a bare 401.
            assert response.headers.get("www-authenticate", "").lower().startswith("basic"), path
    wrong = httpx.get(f"{flower}/api/tasks", auth=(CREDENTIALS[0], "wrong-password"), timeout=30)
    assert wrong.status_code == 401


def test_flower_answers_with_credentials(flower):
    with authenticated(flower) as client:
        for path in ["/", "/api/workers", "/api/tasks"]:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code, response.text[:300])


def test_flower_lists_the_pipeline_tasks_with_ids_as_arguments(worker, flower):
    wait_until_flower_sees_events(flower)
    project = make_project()
    submission = submit_bytes(project, markdown_document(sections=3), "flower.md")
    wait_until(
        lambda: Document.objects.get(id=submission.document.id).status in Document.FINAL_STATUSES,
        timeout=120,
        message="document final",
    )
    document = Document.objects.get(id=submission.document.id)
    assert document.status == "ready"
    chunk_ids = set(Chunk.objects.filter(document=document).values_list("id", flat=True))

    def ours(tasks: dict) -> dict[str, list[tuple]]:
        found: dict[str, list[tuple]] = {}
        for task in tasks.values():
            if not task.get("args"):
                continue
            # Flower shows the repr: a tuple, or a list for a chord callback.
            args = tuple(ast.literal_eval(task["args"]))
            name = task.get("name")
            if (
                (name == "documents.parse_document" and args == (document.id, submission.job.id))
                or (name == "documents.embed_chunk" and len(args) == 1 and args[0] in chunk_ids)
                or (name == "documents.finalize_document" and args[:1] == (document.id,))
            ):
                found.setdefault(name, []).append(args)
                assert ast.literal_eval(task["kwargs"] or "{}") == {}, task
        return found

    listed: dict = {}
    with authenticated(flower) as client:

        def complete() -> dict[str, list[tuple]] | None:
            listed.clear()
            listed.update(client.get("/api/tasks", params={"limit": 1000}).json())
            found = ours(listed)
            embedded = {args[0] for args in found.get("documents.embed_chunk", [])}
            if (
                found.get("documents.parse_document")
                and found.get("documents.finalize_document")
                and embedded == chunk_ids
            ):
                return found
            return None

        try:
            found = wait_until(complete, timeout=60, interval=0.5, message="Flower lists the document's tasks")
        except AssertionError as exc:
            summary = [(t.get("name"), t.get("args"), t.get("state")) for t in listed.values()]
            raise AssertionError(f"{exc}; Flower lists {summary}") from None

    # Ids and small integers only: never a model, a path or document text.
    for name, calls in found.items():
        for args in calls:
            assert all(isinstance(value, int) for value in args), (name, args)
    assert found["documents.finalize_document"][0] == (document.id, document.generation)
