"""The studio page in a real browser (headless Chromium, Playwright) against a real uvicorn server on a loopback port:
upload a photo, see every style's thumbnail, pick one, move the strength slider, download, and check the file; the
error line; the live camera (Chromium's fake camera)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from stylize.api import Stylizer
from stylize.config import ServeOptions
from stylize.serve import running
from tests.browser import browser_page
from tests.conftest import make_photo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def page():
    with running(ServeOptions(port=0, models=("multistyle26",))) as url, browser_page() as browser:
        browser.goto(url + "/")
        browser.wait_for_selector("body[data-ready='1']")
        yield browser


def test_pick_a_style_tune_it_and_download_at_full_resolution(page, tmp_path):
    photo = make_photo(tmp_path / "garden.png", (160, 120))
    page.set_input_files("#file", str(photo))
    page.wait_for_function("document.querySelectorAll('.thumb img[data-ready]').length === 26", timeout=60_000)
    assert page.locator(".thumb span").all_inner_texts() == [str(i) for i in range(26)]
    assert page.locator("#status").inner_text() == "26 styles"
    first_turn = int(page.wait_for_selector("#after[data-turn]").get_attribute("data-turn"))

    page.click(".thumb[data-key='7']")
    page.locator("#strength").fill("0.5")
    assert page.locator(".thumb.picked span").inner_text() == "7" and page.locator("#strength-value").inner_text() == "0.50"
    page.wait_for_function(f"Number(document.getElementById('after').dataset.turn) > {first_turn + 1}")
    page.wait_for_function("document.getElementById('status').textContent === 'ready'")

    with page.expect_download() as download:
        page.click("#download")
    assert download.value.suggested_filename == "garden_stylized.png"
    saved = tmp_path / "downloaded.png"
    download.value.save_as(saved)
    result = Image.open(saved)
    assert result.format == "PNG" and result.size == (160, 120), "full resolution, the photo's own format"
    expected = Stylizer.load(compile="never").apply(photo, style="7", strength=0.5)
    difference = np.abs(np.asarray(result.convert("RGB"), dtype=np.int16) - np.asarray(expected, dtype=np.int16))
    assert difference.max() <= 1, "the download is style 7 at strength 0.5, as picked"
    assert not page.locator("#error").is_visible()


def test_a_server_error_shows_as_the_one_line_message(page, tmp_path):
    page.set_input_files("#file", str(make_photo(tmp_path / "photo.png", (96, 64))))
    page.select_option("#model", "arbitrary")  # a painting model with no painting given
    page.click("#download")
    page.wait_for_selector("#error.shown")
    assert page.locator("#error").inner_text() == "error: model 'arbitrary' takes the style of a painting (pass style_image=PAINTING)"
    page.select_option("#model", "multistyle26")
    page.wait_for_function(  # the strip redrawn for the model chosen again: nothing left in flight for the next test
        "document.querySelectorAll('.thumb img[data-ready]').length === 26 && document.getElementById('progress').hidden",
        timeout=60_000,
    )


def test_the_live_camera_shows_stylized_frames(page):
    page.click("#camera")
    page.wait_for_function("document.getElementById('status').textContent === 'camera: live'", timeout=30_000)
    page.click("#camera")
    assert page.locator("#camera").inner_text() == "Live camera", "stopped: the button offers the camera again"
    width = page.evaluate("document.getElementById('after').naturalWidth")
    assert 0 < width <= 320, "frames are stylized at a small size"
