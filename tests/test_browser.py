"""Real-browser tests: headless Chromium, driven by Python Playwright, on the app served at 127.0.0.1.

Screenshots go to $DOGBREEDS_TEST_ARTIFACTS (default: test-artifacts/ at the repository root) for a person to
look at. Chromium resolves no host name but 127.0.0.1, and every test checks that the page requested nothing
from any other address.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from _app_helpers import serve_app, trained_runs

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
REPO_ROOT = Path(__file__).resolve().parent.parent
BREEDS = ("Chihuahua", "Maltese dog", "beagle")
HEIC_BYTES = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is not installed (apt-get install chromium)"),
]


def real_photo() -> Path:
    """Return a real JPEG photo shipped with the gradio package."""
    import gradio

    photos = sorted((Path(gradio.__file__).parent / "media_assets" / "images").glob("*.jpg"))
    assert photos, "gradio's media_assets/images has no .jpg photo"
    return photos[0]


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("DOGBREEDS_TEST_ARTIFACTS") or REPO_ROOT / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    runs = trained_runs(tmp_path_factory.mktemp("app-runs"))
    with serve_app(tmp_path_factory.mktemp("browser"), runs) as server:
        yield server


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as instance:
        yield instance


class Browser:
    """One fresh Chromium profile with one page, recording every URL the page requests."""

    def __init__(self, playwright, profile: Path, url: str, locale: str) -> None:
        self.url = url
        self.requests: list[str] = []
        self.context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, locale=locale,
            viewport={"width": 1280, "height": 1000},
        )
        self.page = self.context.new_page()
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.set_default_timeout(60_000)
        self.page.goto(url)
        self.page.wait_for_selector("#start_button")

    def foreign_requests(self) -> list[str]:
        local = self.url.rstrip("/")
        return [url for url in self.requests if not url.startswith((local, "data:", "blob:"))]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def open_browser(playwright, served, tmp_path):
    browsers = []

    def opener(locale: str = "en-US") -> Browser:
        browser = Browser(playwright, tmp_path / f"profile-{len(browsers)}", served["url"], locale)
        browsers.append(browser)
        return browser

    yield opener
    for browser in browsers:
        browser.close()


def _set_number(page, elem_id: str, value: int) -> None:
    field = page.locator(f"#{elem_id} input[type=number]")
    field.fill(str(value))
    field.press("Enter")
    field.blur()


def test_compare_shows_both_panels(open_browser, artifacts):
    browser = open_browser("en-US")
    page = browser.page
    page.get_by_role("tab", name="Compare").click()
    page.locator("#photo input[type=file]").set_input_files(str(real_photo()))

    for panel in ("#cnn_top5", "#fcn_top5"):
        page.wait_for_function(
            "([selector, names]) => names.some(name => document.querySelector(selector)?.innerText.includes(name))",
            arg=[panel, list(BREEDS)],
        )
    page.wait_for_function("document.querySelector('#fcn_info')?.innerText.includes('parameters')")
    # The panels fade out their pending state shortly after the values arrive; the pause only helps the picture.
    page.wait_for_timeout(1000)
    page.screenshot(path=str(artifacts / "compare-en.png"), full_page=True)

    assert re.search(r"custom_cnn \(CNN\) · [\d,]+ parameters · [\d.]+ ms", page.locator("#cnn_info").inner_text())
    assert "resfcn18 (fully-connected)" in page.locator("#fcn_info").inner_text()
    assert page.locator("#compare_message").inner_text().strip() == ""
    assert browser.foreign_requests() == []


def test_train_start_stop_shows_plot(open_browser, served, artifacts):
    browser = open_browser("en-US")
    page = browser.page
    page.locator("#data_dir textarea, #data_dir input").first.fill(str(served["data"]))
    _set_number(page, "epochs", 60)
    _set_number(page, "image_size", 32)
    page.locator("#batch_size input").fill("4")
    page.locator("#batch_size input").blur()

    page.locator("#start_button").click()
    # Vega draws each series as a line mark; two means the batch loss and at least one epoch series.
    page.wait_for_function("document.querySelectorAll('#loss_plot .mark-line path').length >= 2", timeout=90_000)
    page.wait_for_function("document.querySelector('#train_log textarea')?.value.split('\\n').length >= 3")
    page.screenshot(path=str(artifacts / "train-running-en.png"), full_page=True)

    page.locator("#stop_button").click()
    page.wait_for_function("document.querySelector('#train_status')?.innerText.includes('Training stopped')",
                           timeout=60_000)
    page.screenshot(path=str(artifacts / "train-stopped-en.png"), full_page=True)

    assert "last completed epoch" in page.locator("#train_status").inner_text()
    assert "custom_cnn" in page.locator("#train_summary").inner_text()
    assert page.locator("#accuracy_plot .mark-line path").count() >= 2
    assert browser.foreign_requests() == []
    assert served["handlers"].coordinator.running is None


def test_korean_page(open_browser, artifacts, tmp_path):
    browser = open_browser("ko-KR")
    page = browser.page
    page.wait_for_function("document.querySelector('#data_note')?.innerText.includes('품종')")
    page.screenshot(path=str(artifacts / "train-ko.png"), full_page=True)

    tabs = [text.strip() for text in page.get_by_role("tab").all_inner_texts()]
    assert tabs[:3] == ["학습", "비교", "결과"]
    assert "학습 시작" in page.locator("#start_button").inner_text()
    assert "[object Object]" not in page.locator("body").inner_text()

    page.get_by_role("tab", name="비교").click()
    page.locator("#photo input[type=file]").set_input_files(str(real_photo()))
    page.wait_for_function("document.querySelector('#cnn_info')?.innerText.includes('파라미터')")
    page.wait_for_timeout(1000)
    page.screenshot(path=str(artifacts / "compare-ko.png"), full_page=True)

    heic = tmp_path / "IMG_0001.heic"
    heic.write_bytes(HEIC_BYTES)
    page.locator("#photo input[type=file]").set_input_files(str(heic))
    page.wait_for_function("document.querySelector('#compare_message')?.innerText.includes('HEIC')")
    page.screenshot(path=str(artifacts / "compare-heic-ko.png"), full_page=True)

    assert "아이폰" in page.locator("#compare_message").inner_text()

    page.get_by_role("tab", name="결과").click()
    page.wait_for_function("document.querySelector('#results_message')?.innerText.includes('실행')")
    # One line per run with two or more epochs, overlaid in each plot.
    page.wait_for_function("document.querySelectorAll('#results_loss .mark-line path').length >= 2")
    page.wait_for_function("document.querySelectorAll('#results_top1 .mark-line path').length >= 2")
    page.screenshot(path=str(artifacts / "results-ko.png"), full_page=True)

    page_text = page.locator("body").inner_text()
    assert "[object Object]" not in page_text
    assert "__i18n__" not in page_text
    axis_text = page.locator("#results_loss svg").first.text_content()
    assert "에포크" in axis_text
    assert "__i18n__" not in axis_text
    assert browser.foreign_requests() == []


def test_missing_folder_offers_download(open_browser, artifacts, tmp_path):
    browser = open_browser("en-US")
    page = browser.page
    missing = tmp_path / "no-dogs-here"
    field = page.locator("#data_dir textarea, #data_dir input").first
    field.fill(str(missing))
    field.press("Enter")

    page.wait_for_selector("#download_button", state="visible")
    page.wait_for_function("document.querySelector('#data_note')?.innerText.includes('not found')")
    page.screenshot(path=str(artifacts / "train-missing-folder-en.png"), full_page=True)

    assert str(missing) in page.locator("#data_note").inner_text()
    assert "Download Stanford Dogs here" in page.locator("#download_button").inner_text()
    assert browser.foreign_requests() == []
