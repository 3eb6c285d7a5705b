"""Real Celery workers and a web server as separate OS processes, against
the benchmark database and Redis database.

Every process starts in its own session, so stopping it takes its children
(prefork pool processes) too; `ProcessGroup` is a context manager and stops
everything it started, whatever happened meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time

import psutil

from bench import env
from mirage import launch
from mirage.devservices import stop_process_group

# Worker settings from the Procfile.
INGEST_QUEUE = "ingest"
MAINTENANCE_QUEUE = "maintenance"
EMBED_QUEUE = "embed"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProcessGroup:
    def __init__(self, label: str, **environment: str) -> None:
        self.label = label
        self.environment = env.worker_environment(**environment)
        self.processes: dict[str, subprocess.Popen] = {}
        # The benchmark database's backends by pid, with the CPU seconds last
        # read: one that exits between two readings keeps what it had used.
        self._backends: dict[str, float] = {}
        # Names of killed processes: a replacement appends to the same log.
        self._killed: set[str] = set()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop_all()

    def log_path(self, name: str):
        return env.LOG_DIR / f"{self.label}-{name}.log"

    def spawn(self, name: str, command: list[str]) -> subprocess.Popen:
        with open(self.log_path(name), "ab" if name in self._killed else "wb") as log:
            process = subprocess.Popen(
                command,
                env=self.environment,
                cwd=env.BASE_DIR,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def celery_worker(self, name: str, *, queues: str, pool: str, concurrency: int) -> str:
        """Start a worker and wait until it answers a ping; returns its node name."""
        node = f"{name}-bench-{os.getpid()}@{socket.gethostname()}"
        self.spawn(
            name,
            # --include registers the no-op tasks and the batcher statistics command.
            launch.celery_worker(
                queues=queues,
                node=node,
                pool=pool,
                concurrency=concurrency,
                options=("--include", "bench.worker_extras"),
            ),
        )
        self._wait(lambda: self._answers(node), timeout=120, what=f"worker {node}", name=name)
        return node

    def pipeline_workers(self, *, pool: str = "threads", concurrency: int = 8) -> tuple[str, str]:
        """The production topology: an `ingest` worker (prefork, one process),
        a `maintenance` worker (threads x2, the reconcilers) and an `embed`
        worker with the given pool and concurrency; returns the ingest and
        embed workers' node names."""
        ingest = self.celery_worker("ingest", queues=INGEST_QUEUE, pool="prefork", concurrency=1)
        self.celery_worker("maintenance", queues=MAINTENANCE_QUEUE, pool="threads", concurrency=2)
        embed = self.celery_worker("embed", queues=EMBED_QUEUE, pool=pool, concurrency=concurrency)
        return ingest, embed

    def uvicorn(self) -> str:
        """The web process from the Procfile on a free loopback port; returns its base URL."""
        port = free_port()
        self.spawn(
            "web",
            launch.web(host="127.0.0.1", port=port, options=("--log-level", "warning", "--no-access-log")),
        )
        base = f"http://127.0.0.1:{port}"
        self._wait(lambda: _port_open(port), timeout=60, what="uvicorn", name="web")
        return base

    def _answers(self, node: str) -> bool:
        from mirage.celery import app

        try:
            replies = app.control.ping(destination=[node], timeout=0.5)
        except Exception:  # noqa: BLE001 - the worker may still be connecting
            return False
        return any(node in reply for reply in replies)

    def _wait(self, condition, *, timeout: float, what: str, name: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.processes[name].poll() is not None:
                raise RuntimeError(f"{what} exited; see {self.log_path(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not come up within {timeout} s; see {self.log_path(name)}")
            time.sleep(0.3)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds used so far by each started process with its children
        (same session), by the PostgreSQL backends connected to the
        benchmark database (autovacuum of it included) and by Redis: diffs of
        two readings say where a run's CPU went.

        The server is shared: the backends of other databases (developers'
        test runs), its postmaster (whose children's time counts every
        database's exited backends) and any other PostgreSQL server on the
        machine are left out; so are its shared background processes
        (checkpointer, WAL writer), which work for every database."""
        sessions = {process.pid: name for name, process in self.processes.items()}
        used = {name: 0.0 for name in self.processes} | {"postgres": 0.0, "redis": 0.0}
        ticks = os.sysconf("SC_CLK_TCK")
        database = f" {env.BENCH_DATABASE} "
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as handle:
                    stat = handle.read()
            except OSError:
                continue
            command = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            # Own time plus that of children already reaped (pool processes
            # that exited between two readings).
            seconds = sum(int(value) for value in fields[11:15]) / ticks
            session = int(fields[3])
            if session in sessions:
                used[sessions[session]] += seconds
            elif command == "postgres" and database in _process_title(entry.name):
                self._backends[f"{entry.name}:{fields[19]}"] = seconds  # pid and start time
            elif command.startswith("redis-server"):
                used["redis"] += seconds
        used["postgres"] = sum(self._backends.values())
        return used

    def kill(self, name: str) -> None:
        """SIGKILL a started process with its children at once (a machine
        losing it). Starting the same name again appends to its log."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        self._killed.add(name)

    def resident_bytes(self) -> dict[str, int]:
        """Resident memory of each started process with its children
        (prefork pool processes), in bytes. Safe to call from another
        thread while processes are killed and started."""
        resident = {}
        for name, process in list(self.processes.items()):
            try:
                parent = psutil.Process(process.pid)
                members = [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
            total = 0
            for member in members:
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                    total += member.memory_info().rss
            resident[name] = total
        return resident

    def stop_all(self) -> None:
        for name in list(self.processes):
            stop_process_group(self.processes.pop(name), grace_seconds=10)


def _process_title(pid: str) -> str:
    """A PostgreSQL process's title (`postgres: user database [local] idle`)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace") + " "
    except OSError:
        return ""


def coalescing_stats(node: str) -> dict:
    """Batches and items of the worker's coalescers (claim and store
    statements, model calls), through bench.worker_extras."""
    from mirage.celery import app

    for reply in app.control.broadcast("bench_batcher_stats", reply=True, destination=[node], timeout=5):
        if node in reply:
            return reply[node]
    return {}


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
