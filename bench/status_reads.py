"""Row 3: status reads. The documents list with progress must cost the same
number of SQL queries for 10 documents as for 1,000, and stay quick under
20 concurrent clients (compared with /healthz under the same load). Its CPU
per page (the web process's and PostgreSQL's) is measured against the same
page served the generic DRF way, DocumentSerializer over
documents_with_progress, as the list was served before."""

from __future__ import annotations

import hashlib
import os
import statistics
import threading
import time

from bench import data
from bench.processes import ProcessGroup
from bench.report import Result, say

CLIENTS = 20
CHUNKS_PER_DOCUMENT = 8
CHUNK_STATUSES = ["ready", "ready", "ready", "ready", "ready", "processing", "pending", "error"]


def create_documents(project, count: int) -> None:
    """`count` documents with a job each and a few chunks in mixed states,
    loaded with COPY."""
    from django.db import connection
    from django.utils import timezone

    from documents import jobkinds
    from documents.models import Document
    from jobs.models import Job

    now = timezone.now()
    jobs = Job.objects.bulk_create(
        [
            Job(
                kind=jobkinds.INDEX_DOCUMENT,
                status=Job.Status.RUNNING,
                project_id=project.id,
                progress_percentage=50,
                started_at=now,
            )
            for _ in range(count)
        ]
    )
    documents = Document.objects.bulk_create(
        [
            Document(
                project=project,
                filename=f"doc-{number}.md",
                file=f"bench/doc-{number}.md",
                file_type="markdown",
                size_bytes=1000,
                content_sha256=hashlib.sha256(f"{project.id}-{number}".encode()).hexdigest(),
                status=Document.Status.INDEXING,
                current_job=job,
                parsing_finished_at=now,
            )
            for number, job in enumerate(jobs)
        ]
    )
    vector = data.vector_text([1.0] + [0.0] * 383)
    rows = (
        (
            document.id,
            position,
            f"chunk {position} of {document.id}",
            "0" * 64,
            5,
            "{}",
            status,
            vector if status == "ready" else None,
            "hash-384" if status == "ready" else "",
            1,
            "",
            now,
            now,
            now,
            "",
        )
        for document in documents
        for position, status in enumerate(CHUNK_STATUSES[:CHUNKS_PER_DOCUMENT])
    )
    data.copy_rows("documents_chunk", data.CHUNK_COLUMNS, rows)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE documents_document, documents_chunk, jobs_job")


def count_queries(function) -> int:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as captured:
        function()
    return len(captured.captured_queries)


REQUEST_TIMEOUT = 10.0


def load(base_url: str, path: str, headers: dict, *, requests_per_client: int) -> tuple[list[float], dict]:
    """CLIENTS threads, each with its own connection, each sending
    `requests_per_client` requests one after another. Returns the latency
    (seconds) of every answered request and a count per outcome (status
    code, or the exception's name for a request that got no answer within
    REQUEST_TIMEOUT; a client stops at its first such request)."""
    import httpx

    latencies: list[float] = []
    outcomes: dict = {}
    lock = threading.Lock()
    start = threading.Event()

    def record(outcome, elapsed: float | None) -> None:
        with lock:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            if elapsed is not None:
                latencies.append(elapsed)

    def client() -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT) as http:
            start.wait()
            for _ in range(requests_per_client):
                started = time.perf_counter()
                try:
                    response = http.get(path)
                except httpx.HTTPError as exc:
                    record(type(exc).__name__, None)
                    return
                record(response.status_code, time.perf_counter() - started)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    start.set()
    for thread in threads:
        thread.join()
    return latencies, outcomes


def load_one(base_url: str, path: str, headers: dict) -> tuple[float, int]:
    """Latency of one request with the server otherwise idle (after one
    untimed request)."""
    import httpx

    with httpx.Client(base_url=base_url, headers=headers, timeout=REQUEST_TIMEOUT) as http:
        http.get(path)
        started = time.perf_counter()
        response = http.get(path)
        return time.perf_counter() - started, response.status_code


CPU_PAGES = 200


def generic_list_view():
    """The baseline: the list's page as DRF's generic path serves it (a
    COUNT over the aggregating query, every document's chunks aggregated
    before the page is cut, DocumentSerializer field by field), behind the
    same authentication and rendering as the product's view."""
    from common.api import paginate
    from documents import selectors
    from documents.api import serializers, views
    from documents.models import Document

    class GenericDocumentListApi(views.ProjectDocumentsApi):
        def get(self, request, project_id: int):
            project = views._project_for(request, project_id)
            queryset = Document.objects.filter(project=project)
            queryset = selectors.documents_with_progress(queryset).order_by("-created_at", "-id")
            return paginate(self, request, queryset, serializers.DocumentSerializer)

    return GenericDocumentListApi.as_view()


def backend_pid() -> int:
    """The pid of this process's PostgreSQL backend."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def backend_cpu_seconds() -> float | None:
    """CPU seconds used so far by this process's PostgreSQL backend (its
    /proc entry; None when the server runs where /proc cannot see it)."""
    try:
        with open(f"/proc/{backend_pid()}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_seconds() -> float | None:
    """CPU seconds used so far by the whole PostgreSQL server: the
    postmaster, every live child (backends of any database, background
    workers) and every child already exited (the postmaster's reaped
    children: a backend per connection that ended). Server-wide, so a fair
    reading of this row's load only on an otherwise idle server; None when
    the server runs where this process cannot see it."""
    import psutil

    try:
        postmaster = psutil.Process(backend_pid()).parent()
        processes = [postmaster, *postmaster.children()]
        total = sum(postmaster.cpu_times()[2:4])  # children_user, children_system
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    except (psutil.Error, AttributeError):
        return None
    return total


def page_cpu(view, project_id: int, token: str, *, pages: int) -> tuple[float, float | None]:
    """CPU milliseconds per list page of `view`, called in this process
    (DRF's dispatch, token authentication, the queries, JSON rendering; no
    HTTP server, no middleware), and of the PostgreSQL backend answering it
    over one persistent connection."""
    from rest_framework.test import APIRequestFactory

    factory = APIRequestFactory()
    path = f"/api/v1/projects/{project_id}/documents/"

    def serve() -> None:
        response = view(factory.get(path, HTTP_AUTHORIZATION=f"Token {token}"), project_id=project_id)
        response.render()
        assert response.status_code == 200, response.content[:500]

    for _ in range(5):
        serve()
    backend_before, started = backend_cpu_seconds(), time.process_time()
    for _ in range(pages):
        serve()
    web = (time.process_time() - started) * 1000 / pages
    backend_after = backend_cpu_seconds()
    backend = None if backend_before is None else (backend_after - backend_before) * 1000 / pages
    return web, backend


def milliseconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def open_connections() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
        return cursor.fetchone()[0]


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(*, quick: bool) -> list[Result]:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    from documents import selectors, services
    from documents.models import Document

    large = 200 if quick else 1000
    user = get_user_model().objects.filter(username="bench").first() or get_user_model().objects.create_user(
        username="bench", password="bench-password-unused"
    )
    token, _ = Token.objects.get_or_create(user=user)
    small_project = services.project_create(name="status-10", embedder="hash", members=[user])
    large_project = services.project_create(name=f"status-{large}", embedder="hash", members=[user])
    say(f"  loading 10 and {large} documents ({CHUNKS_PER_DOCUMENT} chunks each)")
    create_documents(small_project, 10)
    create_documents(large_project, large)

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    def list_page(project):
        def request():
            response = api.get(f"/api/v1/projects/{project.id}/documents/")
            assert response.status_code == 200, response.content[:500]

        return request

    def select_all(project):
        return lambda: list(selectors.documents_with_progress(Document.objects.filter(project=project)))

    list_page(small_project)()  # content types, auth tables: first-request caches
    api_small, api_large = count_queries(list_page(small_project)), count_queries(list_page(large_project))
    selector_small, selector_large = count_queries(select_all(small_project)), count_queries(select_all(large_project))
    say(
        f"    API list page: {api_small} queries for 10 documents, {api_large} for {large}; "
        f"selector over all: {selector_small} and {selector_large}"
    )

    from documents.api.views import ProjectDocumentsApi

    pages = CPU_PAGES // 4 if quick else CPU_PAGES
    say(f"  CPU per list page, {pages} pages of the {large}-document project each way, in this process")
    product_web, product_backend = page_cpu(ProjectDocumentsApi.as_view(), large_project.id, token.key, pages=pages)
    generic_web, generic_backend = page_cpu(generic_list_view(), large_project.id, token.key, pages=pages)
    say(
        f"    list view {product_web:.1f} ms web + {milliseconds(product_backend)} PostgreSQL per page; "
        f"generic DRF path {generic_web:.1f} ms + {milliseconds(generic_backend)}"
    )

    per_client = 5 if quick else 20
    health_per_client = 3 if quick else 5
    list_path = f"/api/v1/projects/{large_project.id}/documents/"
    headers = {"Authorization": f"Token {token.key}"}
    with ProcessGroup("status-reads") as group:
        base_url = group.uvicorn()
        say(f"  uvicorn up at {base_url}; one list request alone, then {CLIENTS} clients x {per_client}")
        alone, _ = load_one(base_url, list_path, headers)
        connections_before = open_connections()
        web_cpu_before, server_cpu_before = group.cpu_seconds()["web"], server_cpu_seconds()
        list_latencies, list_codes = load(base_url, list_path, headers, requests_per_client=per_client)
        answered = max(1, len(list_latencies))
        web_cpu_per_page = (group.cpu_seconds()["web"] - web_cpu_before) * 1000 / answered
        server_cpu_after = server_cpu_seconds()
        server_cpu_per_page = (
            None if server_cpu_before is None else (server_cpu_after - server_cpu_before) * 1000 / answered
        )
        connections_after = open_connections()
        say(
            f"    database connections of the benchmark database: {connections_before} before the load, "
            f"{connections_after} after"
        )
        say(f"  {CLIENTS} clients x {health_per_client} /healthz requests (timeout {REQUEST_TIMEOUT:.0f} s each)")
        health_latencies, health_codes = load(base_url, "/healthz", headers, requests_per_client=health_per_client)
    list_p50, list_p95 = statistics.median(list_latencies), percentile(list_latencies, 0.95)
    health_p50 = statistics.median(health_latencies) if health_latencies else float("nan")
    health_p95 = percentile(health_latencies, 0.95)
    say(
        f"    list alone {alone * 1000:.0f} ms; under load p50 {list_p50 * 1000:.0f} ms p95 {list_p95 * 1000:.0f} ms "
        f"{list_codes}, web process CPU {web_cpu_per_page:.1f} ms and PostgreSQL server CPU "
        f"{milliseconds(server_cpu_per_page)} per answered page; healthz p50 "
        f"{health_p50 * 1000:.0f} ms p95 {health_p95 * 1000:.0f} ms {health_codes}"
    )
    health_unanswered = sum(count for outcome, count in health_codes.items() if not isinstance(outcome, int))
    return [
        Result(
            row=f"3 status reads: SQL queries of the API list page, {large} vs 10 documents",
            measured=f"{api_large} queries",
            baseline=f"{api_small} queries",
            ratio=api_large / api_small,
            goal="equal (1.00)",
            met=api_large == api_small,
            notes=[
                f"selectors.documents_with_progress over every document of the project: {selector_small} "
                f"query for 10, {selector_large} for {large}"
            ],
        ),
        Result(
            row=f"3 status reads: CPU per list page ({large}-document project, 50 rows), list view vs generic DRF path",
            measured=f"{product_web:.1f} ms",
            baseline=f"{generic_web:.1f} ms",
            ratio=product_web / generic_web,
            goal="<= 0.50",
            met=product_web <= 0.5 * generic_web,
            notes=[
                f"web CPU per page in one process ({pages} pages each way, DRF dispatch, token authentication, "
                "queries and rendering, no HTTP server); PostgreSQL backend CPU per page "
                f"{milliseconds(product_backend)} against {milliseconds(generic_backend)}; under the "
                f"{CLIENTS}-client load below the uvicorn process used {web_cpu_per_page:.1f} ms per answered page "
                f"(its middleware and the ASGI handler included; connections from its pool, "
                f"MIRAGE_WEB_DATABASE_POOL_SIZE={settings.MIRAGE_WEB_DATABASE_POOL_SIZE}) and the PostgreSQL server "
                f"{milliseconds(server_cpu_per_page)} (all its processes, exited backends included)"
            ],
        ),
        Result(
            row=f"3 status reads: list page ({large}-document project) vs /healthz, {CLIENTS} clients, p50",
            measured=f"{list_p50 * 1000:.0f} ms",
            baseline=(f"{health_p50 * 1000:.0f} ms" if health_latencies else "no answer")
            + (f", {health_unanswered} hung" if health_unanswered else ""),
            ratio=list_p50 / health_p50 if health_latencies else None,
            goal="stated",
            met=None,
            notes=[
                f"list: one request alone {alone * 1000:.0f} ms; under load {len(list_latencies)} answered, p50 "
                f"{list_p50 * 1000:.0f} ms, p95 {list_p95 * 1000:.0f} ms, outcomes {list_codes}; the web process held "
                f"{connections_after} database connections after the load ({connections_before} before); "
                f"/healthz: {len(health_latencies)} answered, p50 {health_p50 * 1000:.0f} ms, p95 "
                f"{health_p95 * 1000:.0f} ms, outcomes {health_codes} (it waits out a 0.5 s worker ping; with no "
                "worker in this row it answers 503)"
            ],
        ),
    ]
