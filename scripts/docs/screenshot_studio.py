#!/usr/bin/env python3
"""The studio page's screenshot in docs/: ``stylize serve`` in a thread, headless Chromium (as the browser test),
a bundled photo, every style's thumbnail, style 19 picked at strength 0.8::

    python scripts/docs/screenshot_studio.py [--out docs/studio.jpg]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from stylize.config import ServeOptions  # noqa: E402
from stylize.serve import running  # noqa: E402
from tests.browser import browser_page  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "studio.jpg")
    parser.add_argument("--photo", type=Path, default=ROOT / "stylize" / "data" / "photos" / "coffee.jpg")
    args = parser.parse_args()
    with running(ServeOptions(port=0, models=("multistyle26",))) as url, browser_page(1280, 820) as page:
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.set_input_files("#file", str(args.photo))
        page.wait_for_function("document.querySelectorAll('.thumb img[data-ready]').length === 26", timeout=120_000)
        page.click(".thumb[data-key='19']")
        page.locator("#strength").fill("0.8")
        page.wait_for_timeout(300)
        page.wait_for_function("document.getElementById('status').textContent === 'ready'", timeout=60_000)
        page.locator('.thumb.picked').scroll_into_view_if_needed()
        page.screenshot(path=str(args.out), quality=85 if args.out.suffix.lower() in (".jpg", ".jpeg") else None)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
