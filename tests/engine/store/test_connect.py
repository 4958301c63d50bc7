"""Opening a database: URLs, and PostgreSQL without its extra installed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine import Engine
from engine.errors import MissingExtra
from engine.store import redact, resolve_url, sqlite_path


def test_postgresql_without_psycopg_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No traceback from the dialect: one line naming ``jobcharts[postgres]``."""
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    engine = Engine("postgresql+psycopg://postgres@127.0.0.1:5432/test")
    with pytest.raises(MissingExtra) as raised:
        engine.store  # noqa: B018  (opening the store is what needs the driver)
    message = str(raised.value)
    assert "pip install 'jobcharts[postgres]'" in message and "\n" not in message


def test_sqlite_never_needs_psycopg(tmp_path: Path) -> None:
    """A fresh interpreter where ``import psycopg`` fails imports engine and its CLI and
    runs a job on SQLite (a module-level psycopg import anywhere would break this)."""
    script = f"""
import sys
sys.modules["psycopg"] = None  # import psycopg now raises
from engine import Engine
import engine.cli, engine.worker
engine = Engine("sqlite:///{tmp_path}/jobs.db")
engine.job(idempotency=lambda p: "one", kind="k")(lambda ctx, p: None)
engine.enqueue("k")
print(engine.run_until_idle().succeeded)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "1"


def test_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBCHARTS_DB", raising=False)
    assert resolve_url(None) == "sqlite:///jobcharts.db"
    monkeypatch.setenv("JOBCHARTS_DB", "sqlite:///other.db")
    assert resolve_url(None) == "sqlite:///other.db"
    assert resolve_url("sqlite:///given.db") == "sqlite:///given.db"
    assert sqlite_path("sqlite:////tmp/x.db") == "/tmp/x.db"
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("postgresql+psycopg://u@h/db") is None
    assert "secret" not in redact("postgresql+psycopg://u:secret@h/db")
