"""Shared fixtures: a fresh database per test on each backend, and a frozen clock.

``db_url`` is parametrized over SQLite (a new file) and PostgreSQL (a new schema in the
server at ``$JOBCHARTS_TEST_PG``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``),
so every test that takes it is part of the conformance suite run over both backends.

When the server cannot be reached the PostgreSQL half fails in CI (``$JOBCHARTS_CI`` set)
and is reported as not run, with the reason, everywhere else.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine import Engine, FrozenClock

PG_URL = os.environ.get("JOBCHARTS_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_pg_problem: list[str] = []


def _pg_admin() -> sa.Engine | None:
    """An engine on the test server, or None (with the reason kept) when unreachable."""
    if _pg_problem:
        return None
    admin = getattr(_pg_admin, "engine", None)
    if admin is not None:
        return admin  # type: ignore[no-any-return]
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("select 1"))
    except Exception as error:  # the server is down, refused, or the driver is missing
        _pg_problem.append(f"cannot connect to {PG_URL}: {error}".splitlines()[0])
        return None
    _pg_admin.engine = admin  # type: ignore[attr-defined]
    return admin


def pg_schema_url(schema: str) -> str:
    """A URL whose connections use ``schema`` (created by the caller) as search path."""
    url = sa.engine.make_url(PG_URL)
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
            pytest.fail(f"PostgreSQL is required in CI: {_pg_problem[0]}")
        pytest.skip(f"PostgreSQL not run: {_pg_problem[0]}")
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
    if _pg_problem:
        terminalreporter.write_sep("!", "PostgreSQL tests NOT RUN", red=True)
        terminalreporter.write_line(_pg_problem[0])
        terminalreporter.write_line(
            "Start a server (or set JOBCHARTS_TEST_PG) to run the conformance suite on it."
        )


@pytest.fixture(autouse=True)
def _log_threshold() -> Iterator[None]:
    """A CLI command run in process configures logging (``--log-level``, or bench's
    "error"); later tests that capture info events must not inherit it."""
    import structlog

    from engine import events

    before, config = events._threshold[0], structlog.get_config()
    yield
    events.set_log_threshold(before)
    structlog.configure(**config)
