"""Living beside an app's own database, and failing in one line: read-only commands never
create anything, a PostgreSQL schema keeps jobcharts' tables apart, and every bad or
unreachable database URL is one line on stderr with exit status 1 (a traceback only with
--debug)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from engine import Engine, Invariant, NoPayload
from tests.conftest import pg_url

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.engine.cli_app:engine"


def jobcharts(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHARTS_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cwd,
    )


def app_database(path: Path) -> None:
    """An application's own SQLite database, with a table of its own."""
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO customers (name) VALUES ('ada')")


def tables(path: Path) -> list[str]:
    with sqlite3.connect(path) as conn:
        return sorted(
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
        )


@pytest.mark.parametrize(
    "command",
    [["jobs"], ["inspect", "1"], ["requeue", "1"], ["cancel", "1"], ["jobs", "--stranded"]],
)
def test_read_only_commands_create_nothing_in_an_apps_database(
    tmp_path: Path, command: list[str]
) -> None:
    db = tmp_path / "app.db"
    app_database(db)
    result = jobcharts(*command, "--app", APP, "--db", f"sqlite:///{db}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "has no jobcharts tables" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert tables(db) == ["customers"]


def test_read_only_commands_create_nothing_in_a_postgresql_schema() -> None:
    admin = sa.create_engine(pg_url(), isolation_level="AUTOCOMMIT")
    schema = f"app_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        result = jobcharts("jobs", "--db", f"{pg_url()}?schema={schema}")
        assert result.returncode == 1 and "has no jobcharts tables" in result.stderr
        with admin.connect() as conn:
            found = conn.execute(
                sa.text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :s"),
                {"s": schema},
            ).scalar_one()
        assert found == 0
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_a_schema_in_the_url_keeps_jobcharts_apart_from_the_app() -> None:
    """``?schema=NAME`` puts every jobcharts table in its own schema (created on first
    use); the worker's wake-ups and claims run there."""
    schema = f"jobs_{uuid.uuid4().hex[:8]}"
    url = f"{pg_url()}?schema={schema}"
    engine = Engine(url)
    engine.job(payload=NoPayload, idempotency=Invariant("test"), kind="k")(lambda ctx, p: "done")
    admin = sa.create_engine(pg_url(), isolation_level="AUTOCOMMIT")
    try:
        job_id = engine.enqueue("k")
        engine.run_until_idle()
        assert engine.get(job_id).state == "succeeded"
        with admin.connect() as conn:
            where = conn.execute(
                sa.text(
                    "SELECT table_schema FROM information_schema.tables"
                    " WHERE table_name = 'jobs' AND table_schema = :s"
                ),
                {"s": schema},
            ).all()
        assert where == [(schema,)]
        listed = jobcharts("jobs", "--db", url)
        assert listed.returncode == 0 and "succeeded: 1" in listed.stdout, listed.stderr
    finally:
        engine.close()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql+psycopg://postgres@127.0.0.1:1/x", "cannot reach"),
        ("notaurl", "is not a database URL"),
        ("foo://bar", "is not a database URL"),
        ("sqlite:///no/such/dir/x.db", "does not exist"),
        ("sqlite:///{here}/not_a_db.txt", "is not a SQLite database file"),
        ("postgresql+psycopg://postgres@127.0.0.1:5432/test?schema=bad-name", "plain schema"),
    ],
)
@pytest.mark.parametrize(
    "command", [["enqueue", "ship", '{"order_id": 1}'], ["worker", "--until-idle"]]
)
def test_a_bad_database_url_is_one_line_and_exit_1(
    tmp_path: Path, url: str, says: str, command: list[str]
) -> None:
    (tmp_path / "not_a_db.txt").write_text("hello, I am not a database\n" * 100)
    url = url.format(here=tmp_path)
    result = jobcharts(*command, "--app", APP, "--db", url, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and says in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = jobcharts("--debug", "jobs", "--db", "notaurl", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" in result.stderr


def test_an_app_that_fails_to_import_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "broken_app.py").write_text("from engine import Engine\nengine = Engine(\n")
    result = jobcharts("jobs", "--app", "broken_app:engine", cwd=tmp_path)
    assert result.returncode == 2, result.stderr  # a wrong --app is a usage error
    assert "broken_app.py:2" in result.stderr and "Traceback" not in result.stderr
