"""The report as a reader sees it, in headless Chromium: at 1400 px no table hides columns behind a scrollbar.

Not skipped when the browser is missing: the test fails and says how to install it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from study_results import study_results

from seeinpairs.report import ReportInputs, write_report

CHROMIUM = os.environ.get("SEEINPAIRS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OVERFLOW = """[...document.querySelectorAll('.scroll')].map(e => ({
    table: e.closest('section') ? e.closest('section').id : '', scroll: e.scrollWidth, client: e.clientWidth}))"""


def _demo_sized_report(path: Path) -> Path:
    summary, tests = study_results()
    # a failed condition adds the "training" column with its long reason
    summary.loc[3, "degenerate"] = "near-constant probabilities (largest sd over cases 0.0002 < 0.005)"
    curves = pd.DataFrame([{"mode": mode, "n_train": n, "seed": 0, "auroc": 0.7, "auroc_lo": 0.62, "auroc_hi": 0.79,
                            "accuracy": 0.68, "accuracy_lo": 0.61, "accuracy_hi": 0.75}
                           for n in (32, 128) for mode in ("single", "paired")])
    anchor = {"source": "MedMNIST v2, ResNet-18 (28)", "metrics": {"auroc": 0.944, "accuracy": 0.854},
              "note": "Official, imbalanced split (4708/524/624); ours is a class-balanced subset, not comparable."}
    return write_report(path, ReportInputs(title="seeinpairs study: demo", summary=summary, paired_tests=tests,
                                           learning_curves=curves, anchor=anchor, metadata={"study": "demo"}))


def test_no_table_scrolls_sideways_at_1400_px(tmp_path):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: run `make browser` "
                    "(apt-get install -y chromium chromium-driver) or set SEEINPAIRS_CHROMIUM")
    from playwright.sync_api import sync_playwright

    report = _demo_sized_report(tmp_path / "report.html")
    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                                args=ARGS, viewport={"width": 1400, "height": 900})
        try:
            page = browser.new_page()
            page.goto(report.resolve().as_uri())
            containers = page.evaluate(OVERFLOW)
            assert {c["table"] for c in containers} >= {"metrics", "paired", "sample-efficiency"}
            wide = [c for c in containers if c["scroll"] > c["client"]]
            assert not wide, f"tables wider than the page at 1400 px: {wide}"
            assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
            # the last column of the paired table is on screen, not behind a scrollbar
            last = page.locator("#paired th").last
            assert last.text_content() == "Δ AUROC CI"
            box = last.bounding_box()
            assert box is not None and box["x"] + box["width"] <= 1400
        finally:
            browser.close()
