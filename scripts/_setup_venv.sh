# Sourced by demo.sh and test.sh: create .venv if missing and install the project into it (idempotent).
# Usage: setup_venv EXTRAS   (EXTRAS is "" or e.g. "test")
setup_venv() {
    local extras="$1" python="${PYTHON:-python3}" spec="." stamp
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
        echo "error: stylize needs Python 3.10 or newer (found: $("$python" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
        exit 2
    fi
    [ -x .venv/bin/python ] || "$python" -m venv .venv
    [ -n "$extras" ] && spec=".[$extras]"
    # Reinstall only when pyproject.toml or the extras changed, so a second run starts at once.
    stamp="$(cat pyproject.toml; echo "$spec")"
    if [ ! -f .venv/.stylize-installed ] || [ "$(cat .venv/.stylize-installed)" != "$stamp" ]; then
        echo "installing stylize and its dependencies (torch included) into .venv ..." >&2
        .venv/bin/python -m pip install -qq --disable-pip-version-check -e "$spec" >&2
        printf '%s' "$stamp" > .venv/.stylize-installed
    fi
}
