"""The API against its own OpenAPI schema: schemathesis generates requests
(valid and invalid) for every operation in /api/schema/, sends them through
the WSGI application and checks that no answer is a 5xx and that every
status code, content type and body is one the schema declares."""

from __future__ import annotations

from dataclasses import dataclass

import hypothesis
import pytest
import schemathesis
from celery.worker import state
from drf_spectacular.generators import SchemaGenerator
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from documents.api.events import MAX_TIMEOUT_SECONDS
from documents.embeddings import get_embedder
from documents.models import Chunk, Document
from documents.webhooks import services as webhooks
from documents.webhooks.models import WebhookDelivery
from jobs.models import Job
from mirage.celery import app as celery_app
from mirage.wsgi import application
from tests.support.factories import make_project, make_user, markdown_document, submit_bytes
from tests.support.waiting import wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    # One operation takes seconds; a request that hangs must fail the test, not the session.
    pytest.mark.timeout(120),
    # The events view streams from an async generator; the WSGI transport
    # used here reads it whole, which Django allows with this warning.
    pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume asynchronous iterators"),
]

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]

# The schema the server serves at /api/schema/, built in-process: that
# endpoint itself requires a token, which exists only once a test runs.
schema = schemathesis.openapi.from_dict(SchemaGenerator().get_schema(request=None, public=True))
schema.app = application
# Credentials are sent by the test itself; generated ones would only ever
# exercise the 401 path.
schema.config.generation.update(with_security_parameters=False)

EVENTS = "/api/v1/events/"
UPLOAD = "/api/v1/projects/{project_id}/documents/"
IMPORTS = "/api/v1/projects/{project_id}/imports/"
WEBHOOKS = "/api/v1/projects/{project_id}/webhooks/"
# Staff or the project's owner may start a migration; the member may not.
EMBEDDER = "/api/v1/projects/{project_id}/embedder/"
STAFF_PATHS = (IMPORTS, EMBEDDER)
# Every webhook the run creates points here (nothing listens on the discard
# port), so no delivery can leave 127.0.0.0/8 should a worker run one.
LOOPBACK_HOOK = "http://127.0.0.1:9/hook"
MARKDOWN = markdown_document(sections=1)

# What the current test created (ids by parameter name, the import root),
# so that some generated requests reach real rows and succeed instead of
# only ever answering 404 or 400.
live: dict = {}


def _path(context) -> str | None:
    return context.operation.path if context.operation is not None else None


@schema.hook
def flatmap_path_parameters(context, path_parameters):
    real = {name: live[name] for name in path_parameters or {} if name in live}
    if not real:
        return st.just(path_parameters)
    return st.one_of(
        st.fixed_dictionaries(
            {
                **{name: st.just(value) for name, value in path_parameters.items()},
                **{name: st.sampled_from(ids) for name, ids in real.items()},
            }
        ),
        st.just(path_parameters),
    )


def _would_stream(timeout) -> bool:
    """Whether the view would accept `timeout` as sent, or find none (an
    absent value, or a generated object or list, which the query string
    carries as nothing or as separate values)."""
    if isinstance(timeout, str | int | float):
        try:
            return 0 < float(timeout) <= MAX_TIMEOUT_SECONDS
        except ValueError:
            return False
    return True


@schema.hook
def flatmap_query(context, query):
    if _path(context) != EVENTS or not isinstance(query, dict):
        return st.just(query)
    # Under WSGI an event stream is read to its end before it is answered,
    # and one without a short timeout lasts an hour. Timeouts the view
    # refuses stay as generated.
    if _would_stream(query.get("timeout")):
        query = {**query, "timeout": 0.1}
    return st.sampled_from([{**query, "project": project_id} for project_id in live.get("project_id", [])] + [query])


@schema.hook
def flatmap_body(context, body):
    if _path(context) == UPLOAD and isinstance(body, dict):
        # Generated files are images or noise, which the content sniffing
        # refuses (415): offer a document it accepts as well.
        return st.sampled_from([{**body, "file": MARKDOWN}, body])
    if _path(context) == IMPORTS and isinstance(body, dict) and "import_root" in live:
        return st.sampled_from([{**body, "path": live["import_root"]}, body])
    if (_path(context) or "").startswith(WEBHOOKS) and isinstance(body, dict):
        if "url" in body:
            body = {**body, "url": LOOPBACK_HOOK}
        return st.sampled_from([{"url": LOOPBACK_HOOK, "events": ["job.final"]}, body])
    return st.just(body)


@dataclass(frozen=True)
class World:
    member: dict[str, str]
    staff: dict[str, str]


def _token_header(user) -> dict[str, str]:
    token, _ = Token.objects.get_or_create(user=user)
    return {"Authorization": f"Token {token.key}"}


@pytest.fixture(autouse=True)
def short_streams(monkeypatch):
    """Under WSGI an event stream is read to its end before it is answered:
    whatever a generated request asks for (no timeout, a header the hook
    does not see), no stream may outlast a couple of seconds here."""
    from documents.api import events as events_api

    stream = events_api.event_stream

    def short(*, timeout, **kwargs):
        return stream(timeout=min(timeout or 2.0, 2.0), **kwargs)

    monkeypatch.setattr(events_api, "event_stream", short)


@pytest.fixture
def world(settings, tmp_path):
    """A member of one project holding a partly indexed document whose job
    has finished (so the first reindex or retry is accepted, the next
    refused) and a document whose job waits (cancelled once, then refused);
    a webhook (to a loopback address) with one delivery in its log;
    someone else's project and document (404 to the member); a staff user,
    the only kind that may import (and, not owning the project, the one
    that starts embedder migrations); an import root with one file in it.

    The module starts no worker: what the run enqueues stays in the test
    Redis and is purged afterwards, so no later test's worker receives it.
    (Should an earlier test have started the session's worker, the run's
    tasks may execute; the teardown then waits for them, as the `worker`
    fixture does, before the database is flushed.)"""
    (tmp_path / "notes.md").write_bytes(MARKDOWN)
    settings.MIRAGE_IMPORT_ROOTS = [str(tmp_path)]
    settings.MIRAGE_WEBHOOK_ALLOW_PRIVATE = True
    member = make_user()
    project = make_project(members=[member])
    document = submit_bytes(project, markdown_document(sections=2), "guide.md").document
    vector = get_embedder("hash").embed_batch(["salmon"])[0].vector
    Chunk.objects.bulk_create(
        [
            Chunk(
                document=document,
                position=position,
                content=f"salmon river {position}",
                content_sha256=f"fixture-{position}",
                status=status,
                structure={"title": "guide"},
                embedding=None if status == "error" else vector,
                embedding_model="" if status == "error" else "hash-384",
            )
            for position, status in enumerate(["ready", "ready", "error", "corrupted"])
        ]
    )
    Document.objects.filter(id=document.id).update(status=Document.Status.PARTIAL)
    Job.objects.filter(id=document.current_job_id).update(status=Job.Status.COMPLETED, progress_percentage=100)
    waiting = submit_bytes(project, b"plain words waiting for a worker", "waiting.txt").document
    elsewhere = make_project(members=[make_user()])
    foreign = submit_bytes(elsewhere, b"someone else's words", "theirs.txt").document
    webhook = webhooks.webhook_create(project=project, url=LOOPBACK_HOOK, events=["document.final"], actor="system")
    delivery = WebhookDelivery.objects.create(
        webhook=webhook, message_id="msg_world", event_type="document.final", body="{}", state="failed"
    )
    live.update(
        webhook_id=[webhook.id],
        delivery_id=[delivery.id],
        project_id=[project.id, elsewhere.id],
        document_id=[document.id, waiting.id, foreign.id],
        job_id=[document.current_job_id, waiting.current_job_id, foreign.current_job_id],
        import_root=str(tmp_path),
    )
    yield World(member=_token_header(member), staff=_token_header(make_user(staff=True)))
    live.clear()
    celery_app.control.purge()
    wait_until(
        lambda: not state.active_requests and not state.reserved_requests,
        timeout=60,
        message="no task of this test still running",
    )


EXAMPLES = hypothesis.settings(
    max_examples=50,
    deadline=None,
    # The same requests on every run, so a failure reproduces; derandomized
    # runs need no example database.
    derandomize=True,
    database=None,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture, hypothesis.HealthCheck.too_slow],
)


@schema.parametrize()
@EXAMPLES
def test_api_conforms_to_its_schema(case, world):
    headers = world.staff if case.operation.path in STAFF_PATHS else world.member
    if case.operation.path == "/healthz":
        # Without beat (and here without workers) the deployment is
        # degraded: the documented 503 is then a true report, not a server
        # error, and must say why.
        response = case.call_and_validate(headers=headers, checks=CHECKS[1:])
        if response.status_code >= 500:
            assert response.status_code == 503
            body = response.json()
            assert body["status"] == "degraded" and body["reasons"]
        return
    case.call_and_validate(headers=headers, checks=CHECKS)


def test_a_deleted_document_answers_404_as_documented(world):
    document_id = live["document_id"][0]
    delete = schema["/api/v1/documents/{document_id}/"]["DELETE"]
    get = schema["/api/v1/documents/{document_id}/"]["GET"]
    first = delete.Case(path_parameters={"document_id": document_id}).call_and_validate(
        headers=world.member, checks=CHECKS
    )
    assert first.status_code == 204
    for operation in (delete, get):
        again = operation.Case(path_parameters={"document_id": document_id}).call_and_validate(
            headers=world.member, checks=CHECKS
        )
        assert again.status_code == 404


@pytest.mark.parametrize("path", ["/api/v1/documents/abc/", "/api/v1/jobs/1.5/cancel/", "/api/v1/nothing-here/"])
def test_a_path_no_api_route_matches_is_a_json_404(api, path):
    response = api.get(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}
