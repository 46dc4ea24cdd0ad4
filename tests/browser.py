"""Headless Chromium from the system's packages, driven by Playwright: for the page's test and its screenshot script.

Playwright's own browser downloads are not used: the browser is Debian's ``chromium`` (``scripts/test.sh`` installs it),
or the one ``STYLIZE_CHROMIUM`` names.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

#: Headless, and quiet on a closed network: without the background-networking flags Chromium keeps trying to reach
#: Google's services.
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",  # a test pattern as the camera, allowed
]  # fmt: skip


def chromium_path() -> str:
    """The Chromium to drive; an AssertionError that says how to get one when there is none (the test must run)."""
    path = os.environ.get("STYLIZE_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "no Chromium: run scripts/test.sh (it installs Debian's chromium), or set STYLIZE_CHROMIUM=/path/to/chromium"
    return path


@contextmanager
def browser_page(width: int = 1280, height: int = 860) -> Iterator[object]:
    """A Playwright page in a fresh headless Chromium profile that accepts downloads."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="stylize-chromium-") as profile, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=chromium_path(), headless=True, args=FLAGS, accept_downloads=True,
            viewport={"width": width, "height": height},
        )  # fmt: skip
        try:
            yield context.new_page()
        finally:
            context.close()
