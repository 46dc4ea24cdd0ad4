#!/usr/bin/env bash
# Set up .venv with the test extras (first run only), install Chromium for the browser test if it is missing, check
# the import layers (pyproject.toml, docs/architecture.md) and run the test suite; arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_setup_venv.sh
setup_venv "test"
# The studio page's test drives a real headless Chromium (tests/browser.py); it runs, it never skips.
if [ -z "${STYLIZE_CHROMIUM:-}" ] && ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing chromium for the browser test (apt-get) ..." >&2
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "error: the browser test needs Chromium: run 'sudo apt-get install chromium' (or your system's package), or set STYLIZE_CHROMIUM=/path/to/chromium" >&2
        exit 2
    fi
fi
.venv/bin/lint-imports --no-logo --no-cache
exec .venv/bin/python -m pytest "$@"
