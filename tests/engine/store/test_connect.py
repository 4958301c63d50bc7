"""Opening a database: URLs, and PostgreSQL without its extra installed."""

from __future__ import annotations

import sys

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


def test_sqlite_never_needs_psycopg(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)
    engine = Engine(f"sqlite:///{tmp_path}/jobs.db")
    engine.job(idempotency=lambda p: "one", kind="k")(lambda ctx, p: None)
    engine.enqueue("k")
    assert engine.run_until_idle().succeeded == 1
    engine.close()


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
