"""The web page end to end in headless Chromium (Debian's chromium; ``make browser`` installs it).

Not skipped when the browser is missing: the test fails and says how to install it.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from shared_helpers import SERVE_TOKEN

CHROMIUM = os.environ.get("SEEINPAIRS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_page_uploads_a_query_and_shows_the_answer(live_server, synthetic_data):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: run `make browser` "
                    "(apt-get install -y chromium chromium-driver) or set SEEINPAIRS_CHROMIUM")
    from playwright.sync_api import sync_playwright

    root, table, task = synthetic_data
    query = next(c for c in table if c.split == "test")
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                                args=ARGS)
        try:
            page = browser.new_page()
            page.goto(live_server + "/")
            page.wait_for_function("document.getElementById('health').textContent.includes('selector')")
            page.fill("#token", SERVE_TOKEN)
            page.set_input_files("#image", query.image)
            page.select_option("#sex", "F")
            page.click("#submit")
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            answer = page.text_content("#answer")
            assert answer in task.classes
            rows = page.locator("#probabilities tbody tr")
            assert rows.count() == len(task.classes)
            page.wait_for_function("[...document.querySelectorAll('#references img')]"
                                   ".every(i => i.complete && i.naturalWidth > 0)", timeout=15_000)
            assert page.locator("#references img").count() == 2
            # a wrong token is reported on the page, not swallowed
            page.fill("#token", "wrong")
            page.click("#submit")
            page.wait_for_selector("#status.error")
            assert "token" in page.text_content("#status")
        finally:
            browser.close()
