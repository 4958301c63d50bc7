#!/usr/bin/env bash
# The base install (no extras) must work on SQLite: build a wheel of this checkout, install
# it without extras into a fresh venv, then `import engine`, `jobcharts --help` and
# `jobcharts demo`; PostgreSQL without the extra must say in one line which extra to install.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "base install: building a wheel and installing it without extras (in $work)" >&2
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$work/dist" . > "$work/build.log" 2>&1 \
    || { cat "$work/build.log" >&2; exit 1; }
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/jobcharts-*.whl > "$work/install.log" 2>&1 \
    || { cat "$work/install.log" >&2; exit 1; }
cd "$work"  # not the checkout: the installed package is what runs
if "$work/venv/bin/python" -c "import psycopg" 2>/dev/null; then
    echo "base install: psycopg is installed without the postgres extra" >&2
    exit 1
fi
"$work/venv/bin/python" -c "import engine, statecharts; import engine.cli, engine.worker"
"$work/venv/bin/jobcharts" --help > /dev/null
"$work/venv/bin/jobcharts" demo --db "sqlite:///$work/demo.db" > "$work/demo.log" 2>&1 \
    || { cat "$work/demo.log" >&2; exit 1; }
grep -q "succeeded" "$work/demo.log" || { cat "$work/demo.log" >&2; exit 1; }
if out="$("$work/venv/bin/jobcharts" jobs --db postgresql+psycopg://postgres@127.0.0.1:5432/test 2>&1)"; then
    echo "base install: a PostgreSQL URL without psycopg did not fail" >&2
    exit 1
fi
if [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ] || ! printf '%s' "$out" | grep -qF "pip install 'jobcharts[postgres]'"; then
    printf 'base install: expected a one-line hint naming the postgres extra, got:\n%s\n' "$out" >&2
    exit 1
fi
# The dashboard's templates and static files ship in the wheel; without the web extra the
# command says in one line which extra to install.
"$work/venv/bin/python" - "$work"/dist/jobcharts-*.whl <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
for name in ("engine/web/templates/job.html", "engine/web/static/dashboard.js"):
    assert name in names, f"the wheel lacks {name}"
PY
printf 'from engine import Engine\nengine = Engine()\n' > "$work/bare_app.py"
if out="$(PYTHONPATH="$work" "$work/venv/bin/jobcharts" dashboard --app bare_app:engine --db "sqlite:///$work/demo.db" 2>&1)"; then
    echo "base install: the dashboard started without the web extra" >&2
    exit 1
fi
if [ "$(printf '%s\n' "$out" | wc -l)" -ne 1 ] || ! printf '%s' "$out" | grep -qF "pip install 'jobcharts[web]'"; then
    printf 'base install: expected a one-line hint naming the web extra, got:\n%s\n' "$out" >&2
    exit 1
fi
echo "base install: import, --help, demo on SQLite, the PostgreSQL and web hints all work" >&2
