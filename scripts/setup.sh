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
# Mermaid's own parser, for the test that checks jobcharts' Mermaid output (Node.js, tests
# only). Without npm the test is reported as not run (it fails in CI, which installs npm).
if command -v npm >/dev/null 2>&1; then
    mstamp=tests/mermaid/node_modules/.jobcharts-installed
    if [ ! -f "$mstamp" ] || [ tests/mermaid/package-lock.json -nt "$mstamp" ]; then
        echo "installing Mermaid's parser for the tests (log: .venv/npm.log)" >&2
        if npm ci --prefix tests/mermaid --no-audit --no-fund > .venv/npm.log 2>&1; then
            touch "$mstamp"
        else
            cat .venv/npm.log >&2
            echo "npm ci failed: the Mermaid parser test will not run" >&2
        fi
    fi
fi
