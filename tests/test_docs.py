"""The documentation stays true to the code: every setting is documented in
.env.example and docs/configuration.md, and nothing documented is gone."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["mirage", "documents", "jobs"]
VARIABLE = re.compile(r"\bMIRAGE_[A-Z0-9_]+\b")
# Read only by the test suite, not by the product.
TEST_ONLY = {"MIRAGE_TEST_REDIS_URL", "MIRAGE_TEST_MEDIA_ROOT", "MIRAGE_TEST_EMBED_DELAY", "MIRAGE_TEST_FAILURE_RATE"}


def variables_read_by_code() -> set[str]:
    found = set()
    for folder in SOURCES:
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            found |= set(re.findall(r'env(?:\.\w+)?\(\s*"(MIRAGE_[A-Z0-9_]+)"', text))
            found |= set(re.findall(r'os\.environ\.get\(\s*"(MIRAGE_[A-Z0-9_]+)"', text))
            found |= set(re.findall(r'_setting\(\s*"(MIRAGE_[A-Z0-9_]+)"', text))
    return found - TEST_ONLY


def test_every_setting_is_in_env_example_and_the_configuration_reference():
    code = variables_read_by_code()
    env_example = set(re.findall(r"^(MIRAGE_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    reference = set(VARIABLE.findall((ROOT / "docs" / "configuration.md").read_text()))
    assert code - env_example == set()
    assert code - reference == set()


def test_nothing_documented_is_unknown_to_the_code():
    code = variables_read_by_code()
    documented = set(VARIABLE.findall((ROOT / "docs" / "configuration.md").read_text()))
    documented |= set(re.findall(r"^(MIRAGE_[A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert documented - code == set()


def test_readme_commands_exist_in_the_makefile():
    makefile = (ROOT / "Makefile").read_text()
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"make ([a-z-]+)", readme):
        assert re.search(rf"^{target}:", makefile, re.M), target
