#!/usr/bin/env bash
# Set up on a fresh machine, then run the built-in demo on the embedded SQLite default.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/jobcharts demo "$@"
