"""docs/alerts.yml is valid Prometheus and its alerts fire when, and only
when, their conditions hold (docs/alerts.test.yml)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from django.conf import settings

pytestmark = pytest.mark.unit

DOCS = Path(settings.BASE_DIR) / "docs"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not found: `make prometheus` installs it (Debian package `prometheus`)"
)


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], cwd=DOCS, capture_output=True, text=True, timeout=120)


@needs_promtool
def test_the_alert_rules_are_valid():
    result = promtool("check", "rules", "alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


@needs_promtool
def test_the_alert_rules_pass_their_unit_tests():
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_unit_tested_and_uses_only_exported_series():
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = yaml.safe_load((DOCS / "alerts.test.yml").read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case["exp_alerts"]}
    assert {rule["alert"] for rule in rules} == tested
    exported = {
        "mirage_queue_consumers",
        "mirage_beat_last_tick_timestamp_seconds",
        "mirage_queue_oldest_age_seconds",
        "mirage_reconciler_last_success_timestamp_seconds",
        "mirage_reconciler_runs_total",
        "mirage_provider_errors_total",
        "mirage_embed_seconds_count",
        "mirage_documents",
    }
    for rule in rules:
        assert set(re.findall(r"\bmirage_\w+", rule["expr"])) <= exported, rule["alert"]
