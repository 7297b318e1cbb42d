"""The Space in a real browser: headless Debian Chromium driven by Playwright against the app on loopback.

Playwright's own browser downloads are never used: the test runs the system's /usr/bin/chromium (Debian
package `chromium`) and is skipped, saying so, when it is not installed. The screenshot is kept in the
test's tmp dir (and copied to $HM_HF_SCREENSHOT_DIR when set).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from hm_hf.ocr.ppocr import ppocr_available

sys.path.insert(0, str(Path(__file__).parent))
from test_space import SPACE, app_module, meme_app, served, space_model  # noqa: E402,F401 (fixtures)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason=f"Chromium not installed at {CHROMIUM} "
                       "(Debian: apt-get install chromium); the browser test needs it"),
]


def test_upload_classify_and_read_the_probability_in_chromium(served, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    url, _, pipe = served
    example = sorted(SPACE.glob("examples/*.png"))[0]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.wait_for_selector("#classify", timeout=60_000)
            assert "Content warning" in page.inner_text("body")
            page.locator("#meme input[type=file]").set_input_files(str(example))
            textbox = page.locator("#meme-text textarea")
            if ppocr_available():  # the upload pre-fills the text by OCR (the processor's engine, PP-OCR)
                try:
                    page.wait_for_function(
                        "() => document.querySelector('#meme-text textarea').value.trim().length > 0", timeout=60_000
                    )
                except sync_api.TimeoutError:
                    pytest.fail("the text box was not filled by OCR after the upload")
            else:  # no OCR here: type the text as a user would
                textbox.fill("typed meme text")
            text = textbox.input_value().strip()
            page.click("#classify")
            page.wait_for_function(
                "() => /Hateful probability: [0-9.]+/.test(document.querySelector('#details').innerText)",
                timeout=60_000,
            )
            details = page.inner_text("#details")
            shown = float(re.search(r"Hateful probability: ([0-9.]+)", details).group(1))
            page.wait_for_timeout(500)  # let the label bar and the region overlay finish drawing
            screenshot = tmp_path / "space.png"
            page.screenshot(path=str(screenshot), full_page=True)
            label_text = page.inner_text("#prediction")
        finally:
            browser.close()
    expected = pipe(str(example), texts=text)["probability"]
    assert shown == pytest.approx(expected, abs=1e-3)
    assert "hateful" in label_text
    assert screenshot.stat().st_size > 10_000
    assert not errors, errors
    if os.environ.get("HM_HF_SCREENSHOT_DIR"):
        shutil.copy(screenshot, Path(os.environ["HM_HF_SCREENSHOT_DIR"]) / screenshot.name)
