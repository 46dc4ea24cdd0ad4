#!/usr/bin/env bash
# Set up .venv (first run only) and stylize a bundled public-domain photo with the bundled default model.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_setup_venv.sh
setup_venv "video"
mkdir -p out
.venv/bin/stylize apply stylize/data/photos/astronaut.jpg out/astronaut_stylized.jpg --overwrite "$@"
echo "result: $(pwd)/out/astronaut_stylized.jpg"
