#!/usr/bin/env bash
# Set up .venv with the test extras (first run only), check the import layers (pyproject.toml, docs/architecture.md)
# and run the test suite; arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_setup_venv.sh
setup_venv "test"
.venv/bin/lint-imports --no-logo --no-cache
exec .venv/bin/python -m pytest "$@"
