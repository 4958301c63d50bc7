#!/usr/bin/env bash
# Set up on a fresh machine, then lint, type-check and run the whole test suite.
# pytest exits non-zero when a test fails and when no tests are collected.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check statecharts engine tests docs/examples
.venv/bin/ruff format --check statecharts engine tests docs/examples
.venv/bin/mypy
exec .venv/bin/pytest "$@"
