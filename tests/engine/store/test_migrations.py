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
        context = MigrationContext.configure(conn, opts={"compare_type": True})
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
    Store(db_url).close()
    db = sa.create_engine(db_url)
    with db.begin() as conn:  # as if it had been created by an older jobcharts
        conn.execute(sa.text("DELETE FROM alembic_version"))
    db.dispose()
    with pytest.raises(SchemaMismatch, match="jobcharts migrate"):
        Store(db_url)
    result = CliRunner().invoke(cli, ["jobs", "--db", db_url])
    assert result.exit_code != 0 and "jobcharts migrate" in str(result.exception or result.output)


def test_a_newer_schema_is_refused(db_url: str) -> None:
    """A database migrated by a newer jobcharts is refused: upgrade the code first."""
    Store(db_url).close()
    db = sa.create_engine(db_url)
    with db.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999_future'"))
    db.dispose()
    with pytest.raises(SchemaMismatch, match="newer"):
        Store(db_url)
