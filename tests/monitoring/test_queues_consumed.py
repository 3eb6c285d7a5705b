"""Every Mirage queue has a consumer in every way of running the stack, and
the runbook says which queues must be consumed."""

import shlex
from pathlib import Path

import pytest
import yaml
from django.conf import settings

pytestmark = pytest.mark.unit

ROOT = Path(settings.BASE_DIR)


def queues_of(command: list[str]) -> set[str]:
    if "worker" not in command:
        return set()
    return set(command[command.index("-Q") + 1].split(","))


def mirage_queues() -> set[str]:
    return {queue.name for queue in settings.CELERY_TASK_QUEUES}


def test_the_procfile_workers_consume_every_mirage_queue():
    consumed = set()
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip():
            consumed |= queues_of(shlex.split(line.partition(":")[2]))
    assert consumed == mirage_queues()


def test_the_compose_workers_consume_every_mirage_queue():
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    consumed = set()
    for service in services.values():
        command = service.get("command")
        if isinstance(command, list):
            consumed |= queues_of(command)
    assert consumed == mirage_queues()


def test_the_runbook_says_every_queue_must_be_consumed():
    runbook = (ROOT / "docs" / "operations.md").read_text()
    assert "Every queue must be consumed" in runbook
    for queue in mirage_queues():
        assert f"`{queue}`" in runbook
