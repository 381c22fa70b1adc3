"""The comparative viewer (the web page) end to end in headless Chromium (Debian's chromium; ``make browser``
installs it): every state a reader meets, with one browser for the module and a screenshot of each state in
the test's temporary folder.

Not skipped when the browser is missing: the tests fail and say how to install it.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pydicom.data
import pytest
from shared_helpers import SERVE_TOKEN

CHROMIUM = os.environ.get("SEEINPAIRS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CT = pydicom.data.get_testdata_file("CT_small.dcm")
#: the sum of an image's pixels as drawn (same-origin blob and data URLs, so the canvas is readable)
PIXEL_SUM = """img => { const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0); let s = 0;
  for (const v of g.getImageData(0, 0, c.width, c.height).data) s += v; return s; }"""

#: the zoom each image is drawn at (the scale of its CSS transform)
SCALES = "all => all.map(i => new DOMMatrix(getComputedStyle(i).transform).a)"


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"headless Chromium not found at {CHROMIUM}: run `make browser` "
                    "(apt-get install -y chromium chromium-driver) or set SEEINPAIRS_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                                args=ARGS, viewport={"width": 1280, "height": 900})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser, live_server):
    page = browser.new_page()
    page.goto(live_server + "/")
    yield page
    page.close()


@pytest.fixture(scope="module")
def query_png(synthetic_data):
    _, table, _ = synthetic_data
    return next(c for c in table if c.split == "test").image


def sign_in(page):
    """The token the server asks for: the settings load once it is entered."""
    page.fill("#token", SERVE_TOKEN)
    page.press("#token", "Tab")
    page.wait_for_function("document.getElementById('selector').options.length > 0")


def diagnose(page, image, **fields):
    page.set_input_files("#image", image)
    page.wait_for_function("document.getElementById('query-preview').naturalWidth > 0")
    for name, value in fields.items():
        if name in ("sex", "selector"):
            page.select_option(f"#{name}", value)
        else:
            page.fill(f"#{name}", value)
    page.click("#submit")
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    images_loaded(page)


def images_loaded(page):
    page.wait_for_function("[...document.querySelectorAll('#viewer img')].every(i => i.complete && i.naturalWidth > 0)"
                           " && !document.getElementById('submit').disabled", timeout=15_000)


def bar_values(page, container: str) -> dict[str, float]:
    rows = page.locator(f"{container} .bar-row")
    return {rows.nth(i).locator(".option").text_content(): float(rows.nth(i).locator(".value").text_content())
            for i in range(rows.count())}


def test_auth_then_png_answer_with_bars_and_single_beside_paired(page, synthetic_data, query_png, tmp_path):
    _, _, task = synthetic_data
    # without the token the page says so, instead of failing silently
    page.wait_for_selector("#status.error")
    assert "API token" in page.text_content("#status") and "settings load" in page.text_content("#question")
    assert page.is_hidden("#query-preview")  # no broken-image icon before a query is chosen
    page.screenshot(path=str(tmp_path / "1-token-needed.png"), full_page=True)
    sign_in(page)
    assert page.text_content("#question") == task.question
    assert page.text_content("#options") == ", ".join(task.classes)
    assert "none of age, sex and site" in page.text_content("#selector-uses")
    assert "demographic" in page.text_content("#selector-uses")  # where they are used
    page.select_option("#selector", "demographic")
    assert "uses sex, age" in page.text_content("#selector-uses")
    diagnose(page, query_png, sex="F", age="60", k="3")
    paired, single = bar_values(page, "#bars-paired"), bar_values(page, "#bars-single")
    assert list(paired) == list(single) == task.classes
    assert sum(paired.values()) == pytest.approx(1.0, abs=2e-3) and sum(single.values()) == pytest.approx(1.0, abs=2e-3)
    assert page.text_content("#answer") == max(paired, key=paired.get)
    assert page.text_content("#single-answer") == max(single, key=single.get)
    assert "closed set" in page.text_content("#normalisation")
    assert "3 reference(s) (demographic)" in page.text_content("#paired-title")
    captions = page.locator("#references figcaption")
    assert captions.count() == 3
    for i in range(3):
        text = captions.nth(i).text_content()
        assert "sex F" in text and "age " in text and "site " in text and "Why: demographic match" in text
    # readable size: each image is drawn at least 250 px wide on a desktop window
    assert min(page.eval_on_selector_all("#viewer img", "all => all.map(i => i.getBoundingClientRect().width)")) >= 250
    page.screenshot(path=str(tmp_path / "2-answer.png"), full_page=True)
    # a wrong token is reported on the page, not swallowed
    page.fill("#token", "wrong")
    page.click("#submit")
    page.wait_for_selector("#status.error")
    assert "API token" in page.text_content("#status")


def test_dicom_query_with_window_presets(page, tmp_path):
    sign_in(page)
    assert page.is_disabled("#window")
    diagnose(page, CT)
    assert page.is_enabled("#window")
    native = page.eval_on_selector("#query-preview", PIXEL_SUM)
    page.select_option("#window", "lung")
    page.wait_for_function("document.getElementById('window-note').textContent.includes(\"'lung' window\")")
    page.wait_for_function(f"(({PIXEL_SUM})(document.getElementById('query-preview'))) !== {native}")
    assert "display only" in page.text_content("#window-note")
    page.screenshot(path=str(tmp_path / "3-dicom-lung.png"), full_page=True)
    page.select_option("#window", "bone")
    page.wait_for_function("document.getElementById('window-note').textContent.includes(\"'bone' window\")")


def test_a_bad_file_is_a_clear_error(page, tmp_path):
    sign_in(page)
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    page.set_input_files("#image", str(bad))
    page.wait_for_selector("#status.error")
    assert "unsupported image type" in page.text_content("#status")
    page.click("#submit")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Error: unsupported image type')")
    assert page.is_hidden("#result")
    page.screenshot(path=str(tmp_path / "4-bad-file.png"), full_page=True)


def test_overlays_toggle_with_the_share_on_the_references(page, query_png, tmp_path):
    sign_in(page)
    diagnose(page, query_png)
    plain = page.get_attribute("#query-preview", "src")
    assert plain.startswith("blob:")
    page.check("#overlay")
    page.wait_for_function("document.getElementById('overlay-share').textContent.includes('on the references')",
                           timeout=30_000)
    assert page.get_attribute("#query-preview", "src").startswith("data:image/png")
    shares = page.locator("#references .share")
    assert shares.count() == 2 and all("Attribution share" in shares.nth(i).text_content() for i in range(2))
    assert "Attribution share" in page.text_content("#query-share")
    page.screenshot(path=str(tmp_path / "5-overlays.png"), full_page=True)
    page.uncheck("#overlay")
    assert page.get_attribute("#query-preview", "src") == plain and page.text_content("#overlay-share") == ""


def test_swapping_a_reference_changes_the_references_and_moves_the_answer(page, synthetic_data, query_png, tmp_path):
    _, table, task = synthetic_data
    sign_in(page)
    diagnose(page, query_png)
    shown = page.eval_on_selector_all("#references img", "all => all.map(i => i.dataset.id)")
    bank = [c.case_id for c in table if c.label == task.healthy_class and c.split == "train"]
    other = next(i for i in bank if i not in shown)
    before = page.text_content("#references figcaption strong")
    page.fill("#references .swap-input >> nth=0", other)
    page.click("#references .swap-button >> nth=0")
    page.wait_for_function("document.getElementById('moved').textContent.includes('After the swap')")
    images_loaded(page)
    after = page.eval_on_selector_all("#references img", "all => all.map(i => i.dataset.id)")
    assert after == [other, shown[1]] and page.text_content("#references figcaption strong") != before
    assert "chosen in the page" in page.text_content("#references .reason >> nth=0")
    assert "at random" in page.text_content("#references .reason >> nth=1")  # the kept one keeps its reason
    page.screenshot(path=str(tmp_path / "6-swapped.png"), full_page=True)
    # "Next case" by keyboard: the second reference becomes the next bank case not shown
    page.focus("#references .next-button >> nth=1")
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.querySelectorAll('#references img')[1].dataset.id !== {shown[1]!r}")
    images_loaded(page)
    assert page.eval_on_selector_all("#references img", "all => all.map(i => i.dataset.id)")[0] == other


def test_keyboard_focus_and_synchronised_zoom(page, query_png):
    sign_in(page)
    diagnose(page, query_png)
    # every control is reached by Tab, in order, with a visible focus ring
    reached, styles = set(), set()
    for _ in range(60):
        page.keyboard.press("Tab")
        focused = page.evaluate("(() => { const e = document.activeElement; const s = getComputedStyle(e); return "
                                "[e.id || e.className || e.tagName, s.outlineStyle + ' ' + s.outlineWidth]; })()")
        reached.add(focused[0])
        styles.add((focused[0], focused[1]))
    wanted = {"image", "age", "sex", "site", "selector", "k", "token", "submit", "zoom-out", "zoom", "zoom-in",
              "zoom-reset", "overlay", "swap-input", "swap-button", "next-button"}
    assert wanted <= reached, wanted - reached
    assert all(style.startswith("solid 3px") for name, style in styles if name != "BODY"), styles  # BODY: past the end
    page.focus("#zoom-in")
    page.keyboard.press("Enter")
    page.keyboard.press("Enter")
    scales = page.eval_on_selector_all("#viewer img", SCALES)
    assert len(scales) == 3 and set(scales) == {1.5}
    page.focus("#zoom-reset")
    page.keyboard.press("Space")
    assert set(page.eval_on_selector_all("#viewer img", SCALES)) == {1}


def test_phone_width_has_no_horizontal_scroll(page, query_png, tmp_path):
    page.set_viewport_size({"width": 390, "height": 844})
    sign_in(page)
    diagnose(page, query_png)
    page.check("#overlay")
    page.wait_for_function("document.getElementById('overlay-share').textContent.includes('on the references')",
                           timeout=30_000)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    assert page.evaluate("Math.max(...[...document.querySelectorAll('body *')]"
                         ".map(e => e.getBoundingClientRect().right))") <= 390
    page.screenshot(path=str(tmp_path / "7-phone.png"), full_page=True)
