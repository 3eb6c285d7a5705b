"""The soak itself: the Procfile's processes (ingest, maintenance and embed
workers, beat, web) against the benchmark database and a Redis of its own, API clients
uploading and listening, the embed worker SIGKILLed on a schedule and
started again, until every document is final; then the wait for task
results to expire and for autovacuum, and the readings at the end.

Returns everything measured as one JSON-able dict (bench.soak.report turns
it into the table). Every process started here is stopped whatever happens
(Ctrl-C, SIGTERM, an exception): each ProcessGroup and client thread is
registered with one ExitStack."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass

import httpx

from bench import data, env
from bench.processes import EMBED_QUEUE, ProcessGroup, free_port
from bench.report import say
from bench.soak import sampling
from bench.soak.clients import DocumentReader, Shared, SseListener, Uploader, read_document
from mirage import launch

# Reads of single documents once everything is final: the latency baseline.
IDLE_READS = 100
# Results written up to the moment the last document was final are gone
# this long after their expiry (Redis removes expired keys within seconds).
EXPIRY_MARGIN_SECONDS = 30
# After the results expired, how long autovacuum is given to run.
AUTOVACUUM_WAIT_SECONDS = 600
SSE_WAIT_SECONDS = 60


@dataclass(frozen=True)
class SoakSettings:
    documents: int = 5000
    chunks_per_document: int = 50
    uploaders: int = 4
    sse_clients: int = 2
    kill_interval: float = 120.0
    result_expiry: int = 300
    backlog: int = 40
    sample_seconds: float = 10.0
    deadline_hours: float = 12.0


class Stopped(Exception):
    """SIGTERM (or SIGHUP): unwind like Ctrl-C, so everything is stopped."""


def _raise_stopped(signum, frame) -> None:
    raise Stopped(signal.Signals(signum).name)


def soak(settings: SoakSettings) -> dict:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_stopped)
    # Ctrl-C unwinds even where the shell started the soak with SIGINT
    # ignored (a background job of a script).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    env.configure()
    with contextlib.ExitStack() as stack:
        private_redis = not os.environ.get("MIRAGE_BENCH_REDIS_URL")
        groups = []
        if private_redis:
            redis_group = stack.enter_context(ProcessGroup("soak-redis"))
            groups.append(redis_group)
            url = start_redis(redis_group)
            os.environ["MIRAGE_BENCH_REDIS_URL"] = url
            os.environ["MIRAGE_REDIS_URL"] = url
        say(
            f"database {env.bench_database_url()} , redis {env.bench_redis_url()}{' (private)' if private_redis else ''}"
        )
        env.check_redis_unshared()
        env.setup_django()
        env.reset_state()
        return _soak(settings, stack, groups, private_redis)


def start_redis(group: ProcessGroup) -> str:
    """A Redis server of the soak's own on a free loopback port, keeping
    nothing on disk: its INFO memory is the deployment's alone."""
    import redis

    binary = shutil.which("redis-server")
    if not binary:
        sys.exit("redis-server not found: install it, or point the soak at a server with MIRAGE_BENCH_REDIS_URL")
    port = free_port()
    process = group.spawn(
        "redis",
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 30
    with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
        while True:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return url
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not come up; see {group.log_path('redis')}")
            time.sleep(0.2)


@dataclass
class Accounts:
    projects: list[int]
    # The token of each project's owner, in project order.
    tokens: list[str]
    reader_token: str


def create_accounts(settings: SoakSettings) -> Accounts:
    """One project per SSE client (at least one), each with its own user,
    the uploaders spread over them; a reader user is a member of all."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from documents import services

    users = get_user_model().objects

    def user(name: str):
        found = users.filter(username=name).first() or users.create_user(username=name, password=None)
        return found, Token.objects.get_or_create(user=found)[0].key

    reader, reader_token = user("soak-reader")
    projects, tokens = [], []
    for number in range(max(1, settings.sse_clients)):
        owner, token = user(f"soak-{number}")
        projects.append(services.project_create(name=f"soak-{number}", embedder="hash", members=[owner, reader]).id)
        tokens.append(token)
    return Accounts(projects=projects, tokens=tokens, reader_token=reader_token)


def _stop_thread(thread: threading.Thread, halt: threading.Event, timeout: float = 60) -> None:
    halt.set()
    thread.join(timeout=timeout)


def _soak(settings: SoakSettings, stack: contextlib.ExitStack, groups: list[ProcessGroup], private_redis: bool):
    from django.conf import settings as django_settings

    from bench.orchestration import make_document

    started = time.time()
    per_document = data.count_chunks(make_document(chunks=settings.chunks_per_document, seed=1), "doc.md", "hash")
    say(
        f"soak: {settings.documents} documents of {per_document} chunks (hash embedder), {settings.uploaders} "
        f"uploaders, {settings.sse_clients} SSE listeners, embed worker SIGKILLed every {settings.kill_interval:.0f} s"
    )
    accounts = create_accounts(settings)
    # Worker processes read these from the environment ProcessGroup copies.
    os.environ["MIRAGE_RESULT_EXPIRES_SECONDS"] = str(settings.result_expiry)
    group = stack.enter_context(ProcessGroup("soak"))
    groups.append(group)
    say("  starting ingest (prefork 1), maintenance (threads 2), embed (threads 8), beat and web")
    group.pipeline_workers(pool="threads", concurrency=8)
    schedule = env.WORK_DIR / "soak-beat-schedule"
    for stale in env.WORK_DIR.glob("soak-beat-schedule*"):
        stale.unlink()
    group.spawn("beat", launch.celery_beat(schedule=schedule))
    base_url = group.uvicorn()
    redis_client = env.redis_client()
    prefix = django_settings.MIRAGE_REDIS_PREFIX
    baseline_redis = sampling.redis_keys(redis_client, prefix)
    # PostgreSQL's autovacuum counters outlive TRUNCATE: kept to subtract.
    postgres_start = sampling.table_statistics()

    shared = Shared(backlog_limit=settings.backlog)
    stack.callback(shared.stop.set)
    monitor = sampling.Monitor(groups=groups, shared=shared, redis=redis_client, sample_seconds=settings.sample_seconds)
    monitor.start()
    stack.callback(_stop_thread, monitor, monitor.halt)
    listeners = [
        SseListener(base_url=base_url, token=token, project_id=project_id, stop=shared.stop)
        for project_id, token in list(zip(accounts.projects, accounts.tokens, strict=True))[: settings.sse_clients]
    ]
    for listener in listeners:
        listener.start()
        stack.callback(_stop_thread, listener, shared.stop)
    for listener in listeners:
        if not listener.connected.wait(60):
            raise RuntimeError(f"SSE listener of project {listener.project_id} did not connect: {listener.errors}")
    reader = DocumentReader(base_url=base_url, token=accounts.reader_token, shared=shared)
    reader.start()
    stack.callback(_stop_thread, reader, reader.halt)

    uploaders = [
        Uploader(
            base_url=base_url,
            token=accounts.tokens[number % len(accounts.projects)],
            project_id=accounts.projects[number % len(accounts.projects)],
            numbers=range(number, settings.documents, settings.uploaders),
            chunks=settings.chunks_per_document,
            shared=shared,
        )
        for number in range(settings.uploaders)
    ]
    load_started = time.time()
    for uploader in uploaders:
        uploader.start()
    kills, load_ended, timed_out = _run_until_final(
        settings, group, uploaders, [*uploaders, *listeners, reader], shared, load_started
    )
    all_final = time.time()
    reader.halt.set()
    reader.join(timeout=60)
    say(f"  every document final {all_final - load_started:.0f} s after the first upload; idle reads")
    idle_reads = _idle_reads(base_url, accounts.reader_token, shared)
    at_final_redis = sampling.redis_keys(redis_client, prefix)

    # Chord markers keep a lifetime of Celery's own (300 s), whatever the
    # result expiry: wait for the longest-lived Celery key there is.
    celery_ttls = [ttl for shape, ttl in at_final_redis["longest_ttls"].items() if shape.startswith("celery-")]
    expire_at = all_final + max([settings.result_expiry, *celery_ttls]) + EXPIRY_MARGIN_SECONDS
    say(f"  waiting {expire_at - time.time():.0f} s for the run's task results to expire")
    _wait_alive(group, lambda: time.time() >= expire_at, deadline=expire_at + 60, clients=listeners)
    say("  waiting for autovacuum of the chunk table (or its dead tuples below autovacuum's threshold)")
    vacuum_settled = _wait_alive(
        group,
        lambda: sampling.autovacuum_settled(sampling.table_statistics(), since=all_final),
        deadline=time.time() + AUTOVACUUM_WAIT_SECONDS,
        clients=listeners,
    )
    end_redis = sampling.redis_keys(redis_client, prefix)
    end_redis["results_from_the_run"] = sampling.results_written_before(redis_client, prefix, all_final)
    end_redis["unacked"] = int(redis_client.hlen(f"{prefix}unacked"))
    postgres = sampling.table_statistics()
    check = mirage_check()
    truth = final_truth(per_document, listeners)
    shared.stop.set()
    for listener in listeners:
        listener.join(timeout=30)
    monitor.halt.set()
    monitor.join(timeout=30)

    return {
        "settings": dataclasses.asdict(settings),
        "chunks_per_document": per_document,
        "private_redis": private_redis,
        "file_storage": django_settings.MIRAGE_FILE_STORAGE,
        "started": started,
        "load_started": load_started,
        "load_ended": load_ended,
        "all_final": all_final,
        "ended": time.time(),
        "timed_out": timed_out,
        "vacuum_settled": vacuum_settled,
        "kills": kills,
        "uploads": [dataclasses.asdict(upload) for uploader in uploaders for upload in uploader.uploads],
        "upload_failures": [failure for uploader in uploaders for failure in uploader.failures],
        "reads": reader.reads,
        "idle_reads": idle_reads,
        "samples": [dataclasses.asdict(sample) for sample in monitor.samples],
        "ticks": [dataclasses.asdict(tick) for tick in monitor.ticks],
        "reconcile_intervals": sampling.reconciler_intervals(),
        "monitor_errors": monitor.errors,
        "redis": {"baseline": baseline_redis, "all_final": at_final_redis, "end": end_redis},
        "postgres": postgres,
        "postgres_start": postgres_start,
        "mirage_check": check,
        "truth": truth,
        "sse": [
            {
                "project": listener.project_id,
                "connections": listener.connections,
                "events": listener.events,
                "errors": listener.errors[:20],
            }
            for listener in listeners
        ],
    }


def _alive_or_raise(group: ProcessGroup, clients=()) -> None:
    """Stop the soak when a process it started exited or a client thread
    died of an exception: its figures would no longer be the soak's."""
    for name, process in list(group.processes.items()):
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}; see {group.log_path(name)}")
    for client in clients:
        if client.crash:
            raise RuntimeError(f"client {client.name} failed:\n{client.crash}")


def _wait_alive(group: ProcessGroup, condition, *, deadline: float, clients=()) -> bool:
    """Wait for `condition` until `deadline`, checking that no process
    died meanwhile; returns whether the condition was met."""
    while not condition():
        _alive_or_raise(group, clients)
        if time.time() > deadline:
            return False
        time.sleep(5)
    return True


def _run_until_final(settings: SoakSettings, group, uploaders, clients, shared, load_started: float):
    """Kill the embed worker every kill_interval and start another, until
    the uploads are done and every uploaded document is final. Returns the
    kills, when the last upload ended, and whether the deadline passed."""
    from django.db import connection

    from documents.models import Chunk

    deadline = load_started + settings.deadline_hours * 3600
    next_kill = load_started + settings.kill_interval
    next_report = load_started + 60
    kills, load_ended = [], None
    while True:
        _alive_or_raise(group, clients)
        now = time.time()
        if load_ended is None and not any(uploader.is_alive() for uploader in uploaders):
            load_ended = now
            say(f"  uploads done after {now - load_started:.0f} s; waiting for every document to be final")
        unfinished, documents = sampling.document_counts()
        if load_ended is not None and unfinished == 0 and documents == len(shared.document_ids):
            return kills, load_ended, False
        if now > deadline:
            say(f"  deadline of {settings.deadline_hours} h passed with {unfinished} documents not final")
            return kills, load_ended or now, True
        if now >= next_kill:
            processing = Chunk.objects.filter(status=Chunk.Status.PROCESSING).count()
            group.kill("embed")
            killed = time.time()
            group.celery_worker("embed", queues=EMBED_QUEUE, pool="threads", concurrency=8)
            kills.append({"at": killed, "processing": processing, "restart_seconds": time.time() - killed})
            next_kill += settings.kill_interval
        if now >= next_report:
            final, chunks = sampling.chunk_counts()
            say(
                f"  {now - load_started:.0f} s: {len(shared.document_ids)} uploaded, {documents - unfinished} final; "
                f"{final}/{chunks} chunks final; {len(kills)} kills"
            )
            next_report += 60
        connection.close_if_unusable_or_obsolete()
        time.sleep(1)


def _idle_reads(base_url: str, token: str, shared: Shared) -> list[tuple[float, float, int | str]]:
    with httpx.Client(base_url=base_url, timeout=60) as http:
        return [read_document(http, shared.random_document(), token) for _ in range(IDLE_READS)]


def mirage_check() -> dict:
    """`manage.py mirage_check` in this process (the benchmark database)."""
    from django.core.management import CommandError, call_command

    output = io.StringIO()
    try:
        call_command("mirage_check", stdout=output, stderr=output)
    except CommandError as exc:
        return {"clean": False, "output": output.getvalue()[-5000:] + str(exc)}
    return {"clean": True, "output": output.getvalue()[-5000:]}


def final_truth(per_document: int, listeners: list[SseListener]) -> dict:
    """Statuses and chunk counts at the end, and whether each listener's
    last `document.status` event of every document of its project says
    what the database says."""
    from django.db.models import Count

    from documents.models import Chunk, Document

    statuses = dict(Document.objects.values_list("status").annotate(n=Count("id")))
    chunks = dict(Chunk.objects.values_list("status").annotate(n=Count("id")))
    short = Document.objects.annotate(n=Count("chunks")).exclude(n=per_document).count()
    sse = {"documents": 0, "agree": 0, "missing": 0}
    deadline = time.monotonic() + SSE_WAIT_SECONDS
    for listener in listeners:
        truth = dict(Document.objects.filter(project_id=listener.project_id).values_list("id", "status"))
        while time.monotonic() < deadline and any(listener.last_status.get(i) != s for i, s in truth.items()):
            time.sleep(1)
        seen = dict(listener.last_status)
        sse["documents"] += len(truth)
        sse["agree"] += sum(1 for i, s in truth.items() if seen.get(i) == s)
        sse["missing"] += sum(1 for i in truth if i not in seen)
    return {"documents": statuses, "chunks": chunks, "documents_without_all_chunks": short, "sse": sse}
