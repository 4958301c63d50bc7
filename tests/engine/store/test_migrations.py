"""Alembic migrations: the initial revision builds exactly the declared schema, on both
backends; a database at an older revision is refused until migrated."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner

from engine import Engine, Invariant, NoPayload
from engine.cli import cli
from engine.errors import SchemaMismatch
from engine.store import Store
from engine.store import migrate as migrations
from engine.store.schema import metadata


def test_migrations_build_exactly_the_declared_schema(db_url: str) -> None:
    """After `jobcharts migrate`, autogenerate finds no difference from engine.store.schema."""
    result = CliRunner().invoke(cli, ["migrate", "--db", db_url])
    assert result.exit_code == 0, result.output
    assert f"to {migrations.head()}" in result.output
    again = CliRunner().invoke(cli, ["migrate", "--db", db_url])
    assert "already at" in again.output
    db = sa.create_engine(db_url)
    with db.connect() as conn:
        opts = {"compare_type": True, "version_table": migrations.VERSION_TABLE}
        context = MigrationContext.configure(conn, opts=opts)
        assert context.get_current_revision() == migrations.head()
        assert compare_metadata(context, metadata) == []
    db.dispose()


def test_first_use_creates_the_schema(db_url: str) -> None:
    """A fresh database is migrated to head on first use, so the default needs no set-up."""
    engine = Engine(db_url)
    engine.job(payload=NoPayload, idempotency=Invariant("test"), kind="k")(lambda ctx, p: None)
    engine.enqueue("k")
    with engine.store.read() as conn:
        assert migrations.current(conn) == migrations.head()
    engine.close()


def test_an_older_schema_is_refused_with_a_message_to_migrate(db_url: str) -> None:
    """A database whose revision is behind the code is refused, naming `jobcharts migrate`."""
    older = CliRunner().invoke(cli, ["migrate", "--db", db_url, "--to", "0004"])
    assert older.exit_code == 0, older.output  # as an older jobcharts left it
    with pytest.raises(SchemaMismatch, match="jobcharts migrate"):
        Store(db_url)
    result = CliRunner().invoke(cli, ["jobs", "--db", db_url])
    assert result.exit_code != 0 and "jobcharts migrate" in str(result.exception or result.output)


def _forget_the_revision(db_url: str, *more: str) -> None:
    """Empty the version table, as a fixture that truncates every table does."""
    db = sa.create_engine(db_url)
    with db.begin() as conn:
        conn.execute(sa.text("DELETE FROM jobcharts_alembic_version"))
        for statement in more:
            conn.execute(sa.text(statement))
    db.dispose()


def test_head_tables_whose_revision_row_was_emptied_are_stamped_again(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Tables exactly at head with the revision row gone (every table truncated) are
    recognised by comparing them with the schema, and the next open records head again."""
    Store(db_url).close()
    _forget_the_revision(db_url)
    with caplog.at_level("WARNING", logger="jobcharts"):
        engine = Engine(db_url)
        engine.job(payload=NoPayload, idempotency=Invariant("test"), kind="k")(lambda ctx, p: None)
        engine.enqueue("k")
    assert "recorded it again" in caplog.text
    with engine.store.read() as conn:
        assert migrations.current(conn) == migrations.head()
    engine.close()


def test_tables_unlike_head_with_no_revision_are_refused(db_url: str) -> None:
    """With no revision recorded, tables that differ from head's schema in anything (here
    one index missing) are refused, naming a difference, and nothing is stamped."""
    Store(db_url).close()
    _forget_the_revision(db_url, "DROP INDEX ix_jobs_state")
    with pytest.raises(SchemaMismatch, match=r"differ from this jobcharts. schema.*ix_jobs_state"):
        Store(db_url)
    db = sa.create_engine(db_url)
    with db.connect() as conn:
        assert migrations.current(conn) is None
    db.dispose()


def test_a_newer_schema_is_refused(db_url: str) -> None:
    """A database migrated by a newer jobcharts is refused: upgrade the code first."""
    Store(db_url).close()
    db = sa.create_engine(db_url)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE jobcharts_alembic_version SET version_num = '9999_future'"))
    db.dispose()
    with pytest.raises(SchemaMismatch, match="newer"):
        Store(db_url)


def test_an_apps_own_alembic_history_is_left_alone(db_url: str) -> None:
    """An app that uses Alembic keeps its alembic_version: jobcharts records its revision
    in a table of its own, and `jobcharts migrate` works beside the app's history."""
    db = sa.create_engine(db_url)
    with db.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('app_0007')"))
        conn.execute(sa.text("CREATE TABLE customers (id INTEGER PRIMARY KEY)"))
    Store(db_url).close()
    result = CliRunner().invoke(cli, ["migrate", "--db", db_url])
    assert result.exit_code == 0 and "already at" in result.output, result.output
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).all() == [
            ("app_0007",)
        ]
        assert migrations.current(conn) == migrations.head()
        assert sa.inspect(conn).has_table("customers")
    db.dispose()


def test_an_older_jobcharts_version_row_moves_to_its_own_table(db_url: str) -> None:
    """A database set up by a jobcharts that kept its revision in alembic_version (with
    an app's row beside it) is adopted on first write: our row moves, the app's stays."""
    Store(db_url).close()
    db = sa.create_engine(db_url)
    with db.begin() as conn:  # as an older jobcharts left it, beside an app's own row
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        head = migrations.head()
        conn.execute(sa.text("INSERT INTO alembic_version VALUES (:v), ('app_0001')"), {"v": head})
        conn.execute(sa.text("DROP TABLE jobcharts_alembic_version"))
    Store(db_url).close()
    with db.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).all() == [
            ("app_0001",)
        ]
        rows = conn.execute(sa.text("SELECT version_num FROM jobcharts_alembic_version")).all()
        assert rows == [(head,)]
    db.dispose()
