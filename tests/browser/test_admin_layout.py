"""The admin at laptop widths, in headless Chromium: the documents and jobs
lists fit 1,280 and 1,400 px without running off the right edge, a document
page mid-run shows one progress, a failed document says why, and a run that
ends redraws every panel of the open page together, without a reload.

Screenshots at 1,280 px are kept in artifacts/admin-layout/ (git-ignored);
the test prints the directory and records it in the test figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from documents.models import Chunk, Document
from documents.services.transitions import chunks_transition, document_transition
from jobs import services as job_services
from tests.admin.operators import make_operator
from tests.admin.test_admin import new_document
from tests.browser.test_admin_live_progress import PASSWORD, browser, log_in  # noqa: F401 (fixture)
from tests.support import figures
from tests.support.factories import make_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "admin-layout"
WIDTHS = (1280, 1400)
SCREENSHOT_WIDTH = 1280
TIMEOUT_SECONDS = 60
PARSE_ERROR = (
    "could not read the PDF: the file ends before its cross-reference table "
    "(was the upload cut short?); upload the whole file again"
)


def set_viewport(driver, width: int) -> None:
    # The viewport itself, not the window around it: innerWidth is exact.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride", {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
    )


def overflow(driver) -> dict:
    # The admin scrolls a wide changelist table inside its `.results` box,
    # which hides the overflow from the page: that box must not scroll either.
    return driver.execute_script(
        "const boxes = Array.from(document.querySelectorAll('.results'));"
        "return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth,"
        " boxes: boxes.map(box => [box.scrollWidth, box.clientWidth])};"
    )


def assert_fits(driver, width: int, page: str) -> None:
    set_viewport(driver, width)
    sizes = overflow(driver)
    assert sizes["inner"] == width
    assert sizes["scroll"] <= sizes["inner"], f"{page} runs off the right edge at {width} px: {sizes}"
    assert all(scroll <= client for scroll, client in sizes["boxes"]), f"{page} scrolls sideways at {width} px: {sizes}"


def full_page_screenshot(driver, name: str) -> Path:
    """The whole page at SCREENSHOT_WIDTH, as tall as its content."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": SCREENSHOT_WIDTH, "height": min(max(height, 600), 4000), "deviceScaleFactor": 1, "mobile": False},
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    set_viewport(driver, SCREENSHOT_WIDTH)
    return path


def start_run(document: Document) -> None:
    job_services.jobs_admit_pending()
    document_transition(
        document_id=document.id,
        from_statuses=Document.Status.PENDING,
        to=Document.Status.INDEXING,
        actor="worker",
        reason="parsing",
    )


def end_run(document: Document, *, status: str, error_message: str = "") -> None:
    document_transition(
        document_id=document.id,
        from_statuses=Document.Status.INDEXING,
        to=status,
        actor="worker",
        reason="run ended",
        error_message=error_message,
        **({"indexed_at": timezone.now()} if status in (Document.Status.READY, Document.Status.PARTIAL) else {}),
    )
    if status == Document.Status.ERROR:
        job_services.job_fail(job_id=document.current_job_id, error_type="parse_error", error_message=error_message)
    else:
        job_services.job_complete(job_id=document.current_job_id, message="run ended")


def embed_all(document: Document) -> None:
    """The rest of the document's chunks embedded, as workers would."""
    chunks = Chunk.objects.filter(document=document)
    chunks_transition(chunks=chunks, from_statuses=Chunk.Status.PENDING, to=Chunk.Status.PROCESSING)
    chunks_transition(
        chunks=chunks, from_statuses=Chunk.Status.PROCESSING, to=Chunk.Status.READY, embedding=[0.1, 0.2, 0.3]
    )


def arrange_world():
    """A project of documents in every state an operator meets, with the
    long names and long reasons that stretch a list."""
    rivers = make_project(name="Rivers and lakes survey")
    manuals = make_project(name="Operations manuals")
    ready = new_document(rivers, "field-guide-to-the-upper-river-basin-2026-edition", ("ready",) * 12)
    start_run(ready)
    end_run(ready, status=Document.Status.READY)
    partial = new_document(manuals, "network-maintenance-window-planning", ("ready",) * 9 + ("error",) * 2)
    start_run(partial)
    end_run(partial, status=Document.Status.PARTIAL, error_message="2/11 chunks failed: the provider rejected them")
    failed = new_document(manuals, "scanned-invoice-archive-q3")
    start_run(failed)
    end_run(failed, status=Document.Status.ERROR, error_message=PARSE_ERROR)
    midrun = new_document(
        rivers, "wetland-restoration-report", ("ready",) * 45 + ("processing",) * 4 + ("pending",) * 71
    )
    start_run(midrun)
    # The job row's own figure, as a worker writes it: the page must not show it.
    job_services.job_set_progress(job_id=midrun.current_job_id, percentage=18, message="embedding 40/120 chunks")
    waiting = new_document(manuals, "release-checklist")
    for index in range(6):
        gauge = new_document(rivers, f"gauge-station-{index:02d}-readings", ("ready",) * 3)
        start_run(gauge)
        end_run(gauge, status=Document.Status.READY)
    return {"midrun": midrun, "failed": failed, "partial": partial, "waiting": waiting}


def live(document: Document, role: str, part: str = "") -> str:
    selector = f'[data-live-url="{reverse("admin:documents_document_progress")}"][data-live-id="{document.id}"]'
    selector += f'[data-live-role="{role}"]'
    return selector + (f'[data-live-part="{part}"]' if part else ":not([data-live-part])")


def text_of(driver, selector: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, selector).text


def test_admin_pages_fit_1280_px_and_agree_with_themselves(live_server, browser, capsys):  # noqa: F811
    world = arrange_world()
    operator = make_operator(username="operator", password=PASSWORD)
    log_in(browser, live_server.url, operator.username)
    wait = WebDriverWait(browser, TIMEOUT_SECONDS, poll_frequency=0.1)
    shots = {}

    # The documents list: fits, and says why a document failed.
    browser.get(live_server.url + reverse("admin:documents_document_changelist"))
    for width in reversed(WIDTHS):
        assert_fits(browser, width, "the documents list")
    error_cell = browser.find_element(By.CSS_SELECTOR, "#result_list td.field-error_summary .mirage-short")
    assert error_cell.text.startswith("could not read the PDF: the file ends")
    assert error_cell.get_attribute("title") == PARSE_ERROR
    assert error_cell.rect["x"] + error_cell.rect["width"] <= SCREENSHOT_WIDTH
    shots["documents list"] = full_page_screenshot(browser, "documents-list")

    # The jobs list: fits; names kind, file and project; date and time.
    browser.get(live_server.url + reverse("admin:jobs_job_changelist"))
    for width in reversed(WIDTHS):
        assert_fits(browser, width, "the jobs list")
    table = browser.find_element(By.ID, "result_list").text
    assert "Index a document" in table and "index_document" not in table
    assert "wetland-restoration-report.md" in table and "Rivers and lakes survey" in table
    assert "files scanned" not in table
    times = browser.find_element(By.CSS_SELECTOR, "#result_list td.field-times_live").text
    assert timezone.localtime().strftime("%Y-%m-%d") in times and ":" in times
    shots["jobs list"] = full_page_screenshot(browser, "jobs-list")

    # A document page mid-run: the job panel shows the document's numbers.
    midrun = world["midrun"]
    browser.get(live_server.url + reverse("admin:documents_document_change", args=[midrun.id]))
    browser.execute_script("window.__marker = 1")
    assert_fits(browser, SCREENSHOT_WIDTH, "a document page mid-run")
    document_label = text_of(browser, live(midrun, "progress"))
    assert document_label == "45/120 chunks · 37%"
    assert text_of(browser, live(midrun, "progress", "job")) == document_label
    assert text_of(browser, live(midrun, "field", "job")) == "embedding 45/120 chunks"
    assert "18%" not in browser.find_element(By.ID, "content").text
    tools = browser.find_element(By.ID, "mirage-document-tools").text
    assert "CANCEL JOB" in tools.upper() and "RETRY" not in tools.upper() and "REINDEX" not in tools.upper()
    shots["document mid-run"] = full_page_screenshot(browser, "document-mid-run")

    # The run ends while the page is open: every panel moves together.
    embed_all(midrun)
    end_run(midrun, status=Document.Status.READY)
    wait.until(
        lambda _: (
            text_of(browser, live(midrun, "badge")) == "ready"
            and text_of(browser, live(midrun, "badge", "job")) == "completed"
            and text_of(browser, live(midrun, "progress", "job")) == "120/120 chunks · 100%"
            and "REINDEX" in text_of(browser, "#mirage-document-tools").upper()
            and "processing" not in text_of(browser, "#chunks table.mirage-chunks")
            and "ready" in text_of(browser, "#mirage-timeline")
        ),
        message="the open page did not move to ready in every panel",
    )
    assert text_of(browser, live(midrun, "progress")) == "120/120 chunks · 100%"
    assert "CANCEL" not in text_of(browser, "#mirage-document-tools").upper()
    assert browser.execute_script("return window.__marker") == 1, "the page was reloaded"

    # A failed document: the Chunks panel says why, and no retry is offered.
    failed = world["failed"]
    browser.get(live_server.url + reverse("admin:documents_document_change", args=[failed.id]))
    assert_fits(browser, SCREENSHOT_WIDTH, "a failed document page")
    notice = text_of(browser, "#chunks .mirage-chunks-notice")
    assert notice == f"No chunks: the document ended error: {PARSE_ERROR}"
    assert text_of(browser, live(failed, "field") + '[data-live-field="error_message"]') == PARSE_ERROR
    tools = text_of(browser, "#mirage-document-tools").upper()
    assert "REINDEX" in tools and "RETRY" not in tools and "CANCEL" not in tools
    shots["failed document"] = full_page_screenshot(browser, "document-failed")

    with capsys.disabled():
        print(f"\nadmin screenshots at {SCREENSHOT_WIDTH} px in {SCREENSHOTS}")
    figures.record("admin layout screenshots", directory=str(SCREENSHOTS), **{k: v.name for k, v in shots.items()})
