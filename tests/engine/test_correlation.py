"""Correlation ids follow the work (both backends): a handler's jobs inherit its id, an
app's bound id is taken at enqueue, and the handler's context carries it for the app's own
log lines. And the library prints nothing in an app that did not configure logging."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import structlog

from engine import Engine, Invariant
from engine.context import current_correlation

ROOT = Path(__file__).resolve().parents[2]


def test_a_handlers_jobs_inherit_its_correlation_id(db_url: str) -> None:
    engine = Engine(db_url)
    seen: dict[str, Any] = {}

    @engine.job(idempotency=Invariant("test"), kind="parent")
    def parent(ctx: Any, _p: Any) -> int:
        seen["bound"] = structlog.contextvars.get_contextvars().get("correlation_id")
        return engine.enqueue("child")

    engine.job(idempotency=Invariant("test"), kind="child")(lambda ctx, p: None)
    job = engine.enqueue("parent", correlation_id="req-42")
    engine.run_until_idle()
    child = engine.get(job).result
    assert engine.get(child).correlation_id == "req-42"
    assert seen["bound"] == "req-42"
    assert structlog.contextvars.get_contextvars().get("correlation_id") is None  # reset
    assert current_correlation.get() is None
    engine.close()


def test_enqueue_takes_the_id_the_app_bound(db_url: str) -> None:
    engine = Engine(db_url)
    engine.job(idempotency=Invariant("test"), kind="k")(lambda ctx, p: None)
    with structlog.contextvars.bound_contextvars(correlation_id="web-7"):
        inside = engine.enqueue("k")
    outside = engine.enqueue("k")
    assert engine.get(inside).correlation_id == "web-7"
    assert engine.get(outside).correlation_id not in ("web-7", "")
    engine.close()


def test_the_library_prints_nothing_in_an_app_that_did_not_configure_logging(
    tmp_path: Path,
) -> None:
    script = tmp_path / "app.py"
    script.write_text(
        "from engine import Engine, Invariant, Permanent\n"
        f"engine = Engine('sqlite:///{tmp_path / 'x.db'}')\n"
        "@engine.job(idempotency=Invariant('t'), kind='k')\n"
        "def k(ctx, p):\n"
        "    raise Permanent('no')\n"
        "engine.enqueue('k')\n"
        "engine.run_until_idle()\n"
        "assert engine.get(1).state == 'quarantined'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHARTS_")}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == ("", "")
