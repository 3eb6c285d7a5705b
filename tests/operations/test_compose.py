"""docker-compose.yml, the Dockerfile and .dockerignore: the stack they
describe is complete, starts in a safe order, and every command in it names
modules, queues, tasks and management commands that exist."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shlex
import shutil
import subprocess
from graphlib import TopologicalSorter
from pathlib import Path

import pytest
import yaml
from celery import Celery
from django.conf import settings
from django.core.management import get_commands
from django.utils.module_loading import import_string

from mirage.celery import app as celery_app

pytestmark = pytest.mark.unit

ROOT = Path(settings.BASE_DIR)
APP_SERVICES = {"web", "ingest", "maintenance", "embed", "beat", "flower"}
REQUIRED_ENVIRONMENT = {
    "MIRAGE_SECRET_KEY": "a-test-secret",
    "MIRAGE_FLOWER_BASIC_AUTH": "admin:a-test-password",
    "MIRAGE_METRICS_TOKEN": "a-test-metrics-token",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def command_of(service: dict) -> list[str]:
    command = service["command"]
    return shlex.split(command) if isinstance(command, str) else list(command)


def option(args: list[str], *names: str) -> str | None:
    for index, arg in enumerate(args):
        for name in names:
            if arg == name:
                return args[index + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def declared_queues() -> set[str]:
    return {queue.name for queue in settings.CELERY_TASK_QUEUES}


def test_the_stack_has_every_service_and_ollama_is_optional(compose, services):
    assert set(services) == APP_SERVICES | {"db", "redis", "ollama"}
    assert services["ollama"]["profiles"] == ["ollama"]
    assert services["ollama"]["image"].startswith("ollama/ollama")
    assert all("profiles" not in service for name, service in services.items() if name != "ollama")


def test_database_and_redis_keep_their_data_in_named_volumes_and_report_health(compose, services):
    db, broker = services["db"], services["redis"]
    assert db["image"] == "pgvector/pgvector:pg16"
    assert db["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert broker["image"] == "redis:7"
    assert command_of(broker)[-2:] == ["--appendonly", "yes"]
    assert broker["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for service, data_dir in [(db, "/var/lib/postgresql/data"), (broker, "/data")]:
        volume, _, target = service["volumes"][0].partition(":")
        assert target == data_dir and volume in compose["volumes"]
    credentials = db["environment"]
    assert (
        f"postgres://{credentials['POSTGRES_USER']}:{credentials['POSTGRES_PASSWORD']}@db:5432/"
        f"{credentials['POSTGRES_DB']}" == services["web"]["environment"]["MIRAGE_DATABASE_URL"]
    )


def test_app_services_share_one_image_and_environment_and_no_volume(services, compose):
    web = services["web"]
    assert web["build"]["context"] == "."
    assert (ROOT / "Dockerfile").is_file()
    for name in APP_SERVICES:
        service = services[name]
        assert service["image"] == web["image"] and service["build"] == web["build"], name
        environment = service["environment"]
        assert environment["MIRAGE_DATABASE_URL"] == "postgres://mirage:mirage@db:5432/mirage", name
        assert environment["MIRAGE_REDIS_URL"] == "redis://redis:6379/0", name
        # Required: compose refuses to start without a real secret key.
        assert re.fullmatch(r"\$\{MIRAGE_SECRET_KEY:\?.+\}", environment["MIRAGE_SECRET_KEY"]), name
        # /metrics is never open in compose.
        assert re.fullmatch(r"\$\{MIRAGE_METRICS_TOKEN:\?.+\}", environment["MIRAGE_METRICS_TOKEN"]), name
        # Uploads live in PostgreSQL: nothing on disk is shared between hosts.
        assert environment["MIRAGE_FILE_STORAGE"] == "${MIRAGE_FILE_STORAGE:-database}", name
        assert "volumes" not in service, name
    assert "media" not in compose["volumes"]
    flower = services["flower"]["environment"]
    assert flower["MIRAGE_FLOWER_ADDRESS"] == "0.0.0.0"
    assert re.fullmatch(r"\$\{MIRAGE_FLOWER_BASIC_AUTH:\?.+\}", flower["MIRAGE_FLOWER_BASIC_AUTH"])
    assert services["flower"]["ports"] == ["127.0.0.1:${MIRAGE_FLOWER_PORT:-5555}:5555"]


def test_services_wait_for_healthy_dependencies_and_start_in_order(services):
    graph = {}
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        for dependency, condition in depends_on.items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in services[dependency], f"{name} waits on {dependency}, which has no healthcheck"
        graph[name] = set(depends_on)
    order = list(TopologicalSorter(graph).static_order())  # raises on a cycle

    for name in APP_SERVICES:
        assert {"db", "redis"} <= graph[name] or name == "flower", name
    assert graph["flower"] == {"redis"}
    # Beat's database scheduler needs the migrated tables: workers and beat
    # wait for the web container, whose healthcheck requires the migrations.
    for name in ["ingest", "maintenance", "embed", "beat"]:
        assert "web" in graph[name] and order.index("web") < order.index(name)
    assert services["web"]["healthcheck"]["test"] == ["CMD", "python", "manage.py", "healthcheck", "--migrations"]


def test_web_migrates_collects_static_and_serves_the_asgi_application(services):
    shell_command = command_of(services["web"])[-1]
    steps = [shlex.split(step) for step in shell_command.split("&&")]
    assert steps[0][:3] == ["python", "manage.py", "migrate"]
    assert steps[1][:3] == ["python", "manage.py", "collectstatic"]
    uvicorn = steps[2][1:] if steps[2][0] == "exec" else steps[2]
    assert uvicorn[0] == "uvicorn"
    assert option(uvicorn, "--host") == "0.0.0.0" and option(uvicorn, "--port") == "8000"
    module, _, attribute = uvicorn[1].partition(":")
    assert (module, attribute) == ("mirage.asgi", "application")
    # Read, not imported: importing mirage.asgi configures this process's
    # database connections as a web process's (its pool).
    source = Path(importlib.util.find_spec(module).origin).read_text()
    assigned = {
        target.id
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert attribute in assigned
    assert services["web"]["ports"] == ["${MIRAGE_WEB_PORT:-8000}:8000"]


def test_every_management_command_named_in_the_stack_exists(services):
    commands = get_commands()
    named = ["migrate", "collectstatic", services["web"]["healthcheck"]["test"][3]]
    assert all(name in commands for name in named), named


def test_celery_commands_name_the_app_queues_and_scheduler_that_exist(services):
    consumed: set[str] = set()
    for name in ["ingest", "maintenance", "embed", "beat", "flower"]:
        args = command_of(services[name])
        assert args[:3] == ["celery", "-A", "mirage"], name
        app = importlib.import_module(f"{args[2]}.celery").app
        assert isinstance(app, Celery) and app is celery_app
        if args[3] == "worker":
            queues = set(option(args, "-Q").split(","))
            assert queues <= declared_queues(), (name, queues)
            consumed |= queues

    assert command_of(services["ingest"])[3:6] == ["worker", "-Q", "ingest"]
    assert option(command_of(services["ingest"]), "--concurrency") == "1"
    # The reconcilers have a worker of their own: parses never hold them up.
    assert command_of(services["maintenance"])[3:6] == ["worker", "-Q", "maintenance"]
    assert option(command_of(services["embed"]), "-Q") == "embed"
    # The micro-batcher needs the embed tasks of one worker on threads.
    assert option(command_of(services["embed"]), "--pool") == "threads"
    # Every queue a task can be routed to has a worker.
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    assert routed | {settings.CELERY_TASK_DEFAULT_QUEUE} <= consumed

    beat = command_of(services["beat"])
    assert beat[3] == "beat"
    scheduler = option(beat, "--scheduler", "-S").replace(":", ".")
    assert import_string(scheduler).__name__ == "DatabaseScheduler"

    flower = command_of(services["flower"])
    assert flower[3] == "flower"
    assert (ROOT / option(flower, "--conf")).is_file()


def test_every_project_task_is_routed_to_a_queue_a_compose_worker_consumes(services):
    celery_app.loader.import_default_modules()
    consumed = set()
    for name in ["ingest", "maintenance", "embed"]:
        consumed |= set(option(command_of(services[name]), "-Q").split(","))
    project_tasks = [name for name in celery_app.tasks if not name.startswith("celery.")]
    assert {"documents.parse_document", "documents.embed_chunk", "documents.finalize_document"} <= set(project_tasks)
    for task in project_tasks:
        queue = celery_app.amqp.router.route({}, task)["queue"].name
        assert queue in consumed, (task, queue)
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert scheduled <= set(project_tasks), scheduled - set(project_tasks)


def test_dockerfile_installs_the_pinned_requirements_and_the_optional_local_model():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert re.search(r"^ARG INSTALL_LOCAL_MODEL=true$", dockerfile, re.MULTILINE)
    assert "pip install -r requirements/base.txt" in dockerfile
    assert re.search(r'if \[ "\$INSTALL_LOCAL_MODEL" = "true" \].*requirements/local-model\.txt', dockerfile, re.DOTALL)
    for requirements in re.findall(r"requirements/[\w-]+\.txt", dockerfile):
        assert (ROOT / requirements).is_file(), requirements
    assert re.search(r"^USER \w+$", dockerfile, re.MULTILINE), "the container must not run as root"


def test_dockerfile_installs_tesseract_for_ocr():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"apt-get install -y --no-install-recommends tesseract-ocr", dockerfile)
    assert re.search(r'^ARG OCR_LANGUAGES="eng"$', dockerfile, re.MULTILINE)
    assert "tesseract-ocr-$code" in dockerfile


def test_dockerignore_keeps_local_state_and_secrets_out_of_the_image():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".venv", ".mirage", "artifacts", ".git", ".env"} <= ignored


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_accepts_the_file_and_insists_on_the_secrets(tmp_path):
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    environment = {key: value for key, value in os.environ.items() if key not in REQUIRED_ENVIRONMENT}
    # An empty env file, so that a developer's own .env cannot supply the secrets.
    empty_env_file = tmp_path / "empty.env"
    empty_env_file.write_text("")
    config = [*cli, "--env-file", str(empty_env_file)]

    accepted = subprocess.run(
        [*config, "--profile", "ollama", "config", "-q"],
        cwd=ROOT,
        env={**environment, **REQUIRED_ENVIRONMENT},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert accepted.returncode == 0, accepted.stderr

    refused = subprocess.run(
        [*config, "config", "-q"], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0
    assert any(name in refused.stderr for name in REQUIRED_ENVIRONMENT)


def test_the_web_tier_runs_several_processes_in_compose_and_make_run(services):
    # One uvicorn process uses one core for the API's Python work.
    shell_command = command_of(services["web"])[-1]
    uvicorn = shlex.split(shell_command.split("&&")[2])
    assert option(uvicorn, "--workers") == "${MIRAGE_WEB_WORKERS:-2}"
    procfile = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    assert option(shlex.split(procfile["web"]), "--workers") == "${MIRAGE_WEB_WORKERS:-2}"
