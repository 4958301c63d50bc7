"""Schema migrations with Alembic, for SQLite and PostgreSQL alike.

A fresh database is brought to the current schema on first use (so the embedded default
needs no set-up step). A database at an older revision is refused with a message saying to
run ``jobcharts migrate``: a worker never runs against a schema older than its code.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from engine.errors import SchemaMismatch

MIGRATIONS = Path(__file__).with_name("migrations")
ADVISORY_LOCK = 0x6A6F6263  # "jobc": one migration at a time per PostgreSQL database


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The revision this code's schema is at."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def current(conn: Connection) -> str | None:
    """The revision the database is at (None: no jobcharts schema or a pre-Alembic one)."""
    return MigrationContext.configure(conn).get_current_revision()


def has_tables(conn: Connection) -> bool:
    return inspect(conn).has_table("jobs")


def upgrade(conn: Connection, target: str = "head") -> None:
    """Migrate the database behind ``conn`` (in its open transaction) to ``target``."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
    command.upgrade(_config(conn), target)


def check(conn: Connection, url: str) -> str:
    """'ok', 'fresh' (create it) or raise SchemaMismatch saying what to do."""
    found = current(conn)
    if found == head():
        return "ok"
    if found is None and not has_tables(conn):
        return "fresh"
    scripts = ScriptDirectory.from_config(_config())
    known = {rev.revision for rev in scripts.walk_revisions()}
    if found is not None and found not in known:
        raise SchemaMismatch(
            f"{url} is at schema revision {found}, which this jobcharts does not know: it was "
            "migrated by a newer version. Upgrade jobcharts before running it on this database."
        )
    raise SchemaMismatch(
        f"{url} is at schema revision {found or '(none)'} but this jobcharts needs "
        f"{head()}: run `jobcharts migrate --db URL` first."
    )
