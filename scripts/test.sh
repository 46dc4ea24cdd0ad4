#!/usr/bin/env bash
# Set up .venv with the test extras (first run only) and run the test suite; arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_setup_venv.sh
setup_venv "test"
exec .venv/bin/python -m pytest "$@"
