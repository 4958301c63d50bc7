#!/usr/bin/env bash
# Create .venv (Python >= 3.11) and install jobcharts with its test tools. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "jobcharts needs Python >= 3.11; $PYTHON is $("$PYTHON" --version 2>&1)" >&2
    exit 1
fi
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.jobcharts-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setting up .venv (log: .venv/install.log)" >&2
    if ! { .venv/bin/python -m pip install --upgrade pip \
           && .venv/bin/python -m pip install -e '.[dev]'; } > .venv/install.log 2>&1; then
        cat .venv/install.log >&2
        echo "installing jobcharts failed (log above)" >&2
        exit 1
    fi
    touch "$stamp"
fi
