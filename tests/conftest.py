"""Shared fixtures: a fresh database per test on each backend, and a frozen clock.

``db_url`` is parametrized over SQLite (a new file) and PostgreSQL (a new schema in the
server at ``$JOBCHARTS_TEST_PG``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``),
so every test that takes it is part of the conformance suite run over both backends.

When the server cannot be reached the PostgreSQL half fails in CI (``$JOBCHARTS_CI`` set);
elsewhere a throwaway server is started from the ``pgserver`` wheel, and only if that fails
too is the half reported as not run, with the reason.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import Engine, FrozenClock

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PG_URL = os.environ.get("JOBCHARTS_TEST_PG", DEFAULT_PG_URL)
_pg: dict[str, Any] = {}  # "url" and "admin" once connected, or "problem"


def _connect(url: str) -> sa.Engine:
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(sa.text("select 1"))
    return admin


def _throwaway_server() -> str:
    """Start a PostgreSQL server in a temporary directory (the ``pgserver`` wheel ships
    its binaries) for this test run; it is stopped and deleted when the run exits."""
    import pgserver  # the dev extra installs it

    server = pgserver.get_server(tempfile.mkdtemp(prefix="jobcharts-pg-"), cleanup_mode="delete")
    _pg["server"] = server  # kept alive until the run ends
    return str(server.get_uri()).replace("postgresql://", "postgresql+psycopg://", 1)


def _pg_admin() -> sa.Engine | None:
    """An engine on the test server, or None (with the reason kept) when there is none.

    No server answering at the default address, outside CI and with no
    ``$JOBCHARTS_TEST_PG`` given: a throwaway server is started instead, so a laptop runs
    the PostgreSQL half too.
    """
    if "admin" in _pg or "problem" in _pg:
        return _pg.get("admin")
    try:
        _pg["admin"], _pg["url"] = _connect(PG_URL), PG_URL
        return _pg["admin"]
    except Exception as error:  # the server is down, refused, or the driver is missing
        problem = f"cannot connect to {PG_URL}: {error}".splitlines()[0]
    if os.environ.get("JOBCHARTS_CI") or "JOBCHARTS_TEST_PG" in os.environ:
        _pg["problem"] = problem
        return None
    try:
        url = _throwaway_server()
        _pg["admin"], _pg["url"] = _connect(url), url
        return _pg["admin"]
    except Exception as error:
        _pg["problem"] = f"{problem}; no throwaway server either: {error}".splitlines()[0]
        return None


def pg_url() -> str:
    """The URL of the PostgreSQL server the tests use (the machine's, or a throwaway)."""
    if _pg_admin() is None:
        pytest.skip(f"PostgreSQL not run: {_pg['problem']}")
    return str(_pg["url"])


def pg_schema_url(schema: str) -> str:
    """A URL whose connections use ``schema`` (created by the caller) as search path."""
    url = sa.engine.make_url(pg_url())
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this run of the test."""
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test: a SQLite file, or a PostgreSQL schema."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    admin = _pg_admin()
    if admin is None:
        if os.environ.get("JOBCHARTS_CI"):
            pytest.fail(f"PostgreSQL is required in CI: {_pg['problem']}")
        pytest.skip(f"PostgreSQL not run: {_pg['problem']}")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield pg_schema_url(schema)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def sqlite_only(backend: str) -> None:
    """Skip the PostgreSQL run of a test about SQLite itself."""
    if backend != "sqlite":
        pytest.skip("about SQLite itself")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def engine(db_url: str, clock: FrozenClock) -> Iterator[Engine]:
    """An engine on a fresh database, driven by a frozen clock."""
    eng = Engine(db_url, clock=clock, seed=7)
    yield eng
    eng.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say plainly when the PostgreSQL half of the suite did not run, and why."""
    if "problem" in _pg:
        terminalreporter.write_sep("!", "PostgreSQL tests NOT RUN", red=True)
        terminalreporter.write_line(_pg["problem"])
        terminalreporter.write_line(
            "Start a server (or set JOBCHARTS_TEST_PG) to run the conformance suite on it."
        )
    elif "server" in _pg:
        terminalreporter.write_line(
            f"PostgreSQL: no server at {PG_URL}; ran on a throwaway server ({_pg['url']})"
        )


@contextmanager
def logging_restored() -> Iterator[None]:
    """Undo what a CLI command run in process does to logging (``--log-level``, or
    bench's "error": the event threshold and structlog's configuration)."""
    import structlog

    from engine import events

    before, config = events._threshold[0], structlog.get_config()
    try:
        yield
    finally:
        events.set_log_threshold(before)
        structlog.configure(**config)


@pytest.fixture(autouse=True)
def _log_threshold() -> Iterator[None]:
    """Later tests that capture info events must not inherit a CLI run's logging."""
    with logging_restored():
        yield
