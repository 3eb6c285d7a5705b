"""Real processes for fault-injection tests: a private Redis that can be
killed and restarted empty, Celery workers and beat as separate OS
processes, and `manage.py` commands, all against the test database.

Every process is started in its own session so a kill takes its children
too, and `stop_all()` leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import redis
from django.conf import settings
from django.db import connection

from mirage import launch
from mirage.devservices import stop_process_group
from tests.support.waiting import wait_until

BASE_DIR = Path(settings.BASE_DIR)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The URL of the database this test session uses (test_<name>)."""
    db = connection.settings_dict
    host = quote(db["HOST"] or "", safe="")
    credentials = quote(db["USER"] or "", safe="")
    if db.get("PASSWORD"):
        credentials += ":" + quote(db["PASSWORD"], safe="")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{credentials}@{host}{port}/{db['NAME']}"


class Stack:
    def __init__(self, workdir: Path, **environment: str) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.processes: dict[str, subprocess.Popen] = {}
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "MIRAGE_DATABASE_URL": database_url(),
            "MIRAGE_REDIS_URL": self.redis_url,
            "MIRAGE_TEST_MEDIA_ROOT": str(settings.MEDIA_ROOT),
            "MIRAGE_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **environment,
        }

    @property
    def redis_prefix(self) -> str:
        return self.env.get("MIRAGE_REDIS_PREFIX") or settings.MIRAGE_REDIS_PREFIX

    # --- Redis -----------------------------------------------------------------

    def start_redis(self) -> None:
        """A Redis that keeps nothing on disk: a restart loses every message."""
        binary = shutil.which("redis-server")
        assert binary, "redis-server is needed for fault-injection tests"
        self.spawn(
            "redis",
            [
                binary,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
        )
        wait_until(self._redis_answers, timeout=20, message="private redis answers")

    def _redis_answers(self) -> bool:
        try:
            return bool(self.redis().ping())
        except redis.RedisError:
            return False

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_connect_timeout=1, socket_timeout=5)

    # --- Celery ---------------------------------------------------------------------

    def start_worker(self, name: str, queues: str, concurrency: int = 2, pool: str = "prefork") -> None:
        self.spawn(
            name,
            launch.celery_worker(
                queues=queues,
                node=f"{name}-{self.redis_port}@%h",
                pool=pool,
                concurrency=concurrency,
                options=("--without-gossip", "--without-mingle"),
            ),
        )
        wait_until(lambda: self.worker_answers(name), timeout=60, interval=0.5, message=f"worker {name} answers")

    def worker_answers(self, name: str) -> bool:
        from celery import Celery

        # A bare app on the private broker, never the current app: tasks the
        # test process sends later must still go to the suite's Redis.
        probe = Celery(broker=self.redis_url, set_as_current=False)
        # The deployment's prefix applies to control messages too.
        probe.conf.broker_transport_options = {"global_keyprefix": self.redis_prefix}
        try:
            replies = probe.control.ping(timeout=1.0)
        except Exception:  # noqa: BLE001 - the broker may be restarting
            return False
        finally:
            probe.close()
        return any(node.startswith(f"{name}-{self.redis_port}@") for reply in replies for node in reply)

    def start_beat(self) -> None:
        self.spawn("beat", launch.celery_beat(schedule=self.workdir / "beat-schedule"))

    # --- Web ------------------------------------------------------------------------

    def start_web(self) -> str:
        """The ASGI web app on a free loopback port; returns its base URL."""
        import httpx

        port = free_port()
        self.spawn("web", launch.web(host="127.0.0.1", port=port, options=("--log-level", "warning")))
        base_url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return httpx.get(f"{base_url}/livez", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(answers, timeout=60, interval=0.3, message="web process answers /livez")
        return base_url

    # --- Commands ----------------------------------------------------------------------

    def manage(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            env=self.env,
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
        return result

    # --- Process control -----------------------------------------------------------------

    def spawn(self, name: str, command: list[str]) -> None:
        with open(self.workdir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                command, env=self.env, cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Kill a process and all its children at once (a dying machine)."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.processes):
            stop_process_group(self.processes.pop(name))

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 1)
