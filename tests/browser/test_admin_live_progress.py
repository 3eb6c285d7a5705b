"""The admin in a real browser: an operator uploads a document and watches its
progress bar and badge move to `ready` without reloading the page.

Headless Debian Chromium driven by Selenium, against pytest-django's live
server and the real Celery worker of tests/conftest.py.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
from django.urls import reverse
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from documents.models import Document
from tests.admin.operators import make_operator
from tests.support import figures
from tests.support.factories import make_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROMIUM_FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1440,1100",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
SLOW_EMBEDDER = "tests.support.embedders.RecordingEmbedder"
# About 400 chunks at 0.05 s each on four worker threads: several seconds of
# embedding, long enough for a one-second poll to see values in between.
SECTIONS = 400
EMBED_DELAY_SECONDS = "0.05"
TIMEOUT_SECONDS = 180
PASSWORD = "pw-for-tests-123"


@pytest.fixture
def browser(tmp_path):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def field_guide(sections: int) -> bytes:
    """A Markdown document of one chunk per section. The run token keeps its
    text out of the embedding cache, so every chunk really waits on the
    embedder."""
    token = uuid.uuid4().hex
    parts = [f"# Field guide {token}\n"]
    for index in range(sections):
        parts.append(f"\n## Reach {index}\n\n")
        parts.append(f"Reach {index} of guide {token} describes currents, banks and the fish that live there. " * 5)
        parts.append("\n")
    return "".join(parts).encode()


def log_in(driver, base_url: str, username: str) -> None:
    driver.get(base_url + reverse("admin:login"))
    driver.find_element(By.ID, "id_username").send_keys(username)
    driver.find_element(By.ID, "id_password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "#login-form [type=submit]").click()
    WebDriverWait(driver, 30).until(expected_conditions.presence_of_element_located((By.ID, "user-tools")))


def test_document_page_shows_progress_until_ready_without_reloading(
    live_server, worker, browser, monkeypatch, tmp_path
):
    # The worker runs in this process, so the embedder sees this variable.
    monkeypatch.setenv("MIRAGE_TEST_EMBED_DELAY", EMBED_DELAY_SECONDS)
    project = make_project(name="Rivers", embedder=SLOW_EMBEDDER)
    operator = make_operator(username="operator", password=PASSWORD)
    upload = tmp_path / "field-guide.md"
    upload.write_bytes(field_guide(SECTIONS))

    log_in(browser, live_server.url, operator.username)
    browser.get(live_server.url + reverse("admin:documents_document_upload"))
    Select(browser.find_element(By.ID, "id_project")).select_by_visible_text(project.name)
    browser.find_element(By.ID, "id_file").send_keys(str(upload))
    browser.find_element(By.NAME, "_upload").click()

    wait = WebDriverWait(browser, TIMEOUT_SECONDS, poll_frequency=0.1)
    document = wait.until(lambda _: Document.objects.filter(project=project).first())
    wait.until(expected_conditions.url_contains(reverse("admin:documents_document_change", args=[document.id])))
    browser.execute_script("window.__marker = 1")
    live = f'[data-live-url="{reverse("admin:documents_document_progress")}"][data-live-id="{document.id}"]'
    progress = browser.find_element(By.CSS_SELECTOR, f'{live}[data-live-role="progress"]:not([data-live-part])')
    badge = browser.find_element(By.CSS_SELECTOR, f'{live}[data-live-role="badge"]:not([data-live-part])')
    seen: list[int] = []

    def progress_value() -> int:
        value = int(progress.get_attribute("aria-valuenow"))
        if not seen or seen[-1] != value:
            seen.append(value)
        return value

    wait.until(lambda _: 0 < progress_value() < 100, message=f"no intermediate progress; saw {seen}")
    wait.until(
        lambda _: progress_value() == 100 and badge.text == "ready",
        message=f"never reached 100% and ready; saw {seen}, badge {badge.text!r}",
    )

    # The job panel reads the document's feed (its "job" part); it is
    # redrawn when the run ends, so it is looked up afresh each time.
    job_badge = f'{live}[data-live-part="job"][data-live-role="badge"]'
    wait.until(
        lambda _: browser.find_element(By.CSS_SELECTOR, job_badge).text == "completed",
        message="job badge never showed completed",
    )
    # The bar eases to its width; the screenshot waits for it to arrive.
    wait.until(
        lambda _: browser.execute_script(
            "const bar = arguments[0].querySelector('.mirage-progress__bar');"
            "return bar.getBoundingClientRect().width >= bar.parentElement.getBoundingClientRect().width - 0.5;",
            progress,
        )
    )

    assert browser.execute_script("return window.__marker") == 1, "the page was reloaded"
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    label = progress.find_element(By.CSS_SELECTOR, ".mirage-progress__label").text
    chunks_total = document.chunks.count()
    assert label == f"{chunks_total}/{chunks_total} chunks · 100%"
    job_progress = browser.find_element(By.CSS_SELECTOR, f'{live}[data-live-part="job"][data-live-role="progress"]')
    assert job_progress.find_element(By.CSS_SELECTOR, ".mirage-progress__label").text == label
    assert "yet" not in browser.find_element(By.ID, "chunks").text
    assert "mirage-badge--ready" in badge.get_attribute("class")
    assert Document.objects.get(id=document.id).status == "ready"
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "admin-live-progress.png"))
    figures.record("admin live progress", chunks=chunks_total, progress_seen=seen)
