"""Schema migrations with Alembic, for SQLite and PostgreSQL alike.

A fresh database is brought to the current schema on first use (so the embedded default
needs no set-up step). A database at an older revision is refused with a message saying to
run ``jobcharts migrate``: a worker never runs against a schema older than its code.

jobcharts records its revision in a table of its own, ``jobcharts_alembic_version``, so it
can share a database with an application that uses Alembic itself (whose history lives in
``alembic_version``). A database set up by an older jobcharts, which used
``alembic_version``, has its row moved to the new table by the next write.

A version table that lost its row (emptied with the other tables, say by a test fixture
or a script that truncates everything) is recognised when the tables are exactly head's
schema, compared column by column and index by index by Alembic's autogenerate, and the
next write stamps it again; tables that differ in anything are still refused.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text

from engine.errors import SchemaMismatch
from engine.store.schema import metadata

log = logging.getLogger("jobcharts")

MIGRATIONS = Path(__file__).with_name("migrations")
ADVISORY_LOCK = 0x6A6F6263  # "jobc": one migration at a time per PostgreSQL database
VERSION_TABLE = "jobcharts_alembic_version"  # ours: an app's Alembic keeps alembic_version
LEGACY_TABLE = "alembic_version"  # where jobcharts before 0004 kept its revision


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["version_table"] = VERSION_TABLE
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _ours() -> set[str]:
    """Every revision jobcharts' migrations know."""
    return {rev.revision for rev in ScriptDirectory.from_config(_config()).walk_revisions()}


def head() -> str:
    """The revision this code's schema is at."""
    revision = ScriptDirectory.from_config(_config()).get_current_head()
    assert revision is not None
    return revision


def current(conn: Connection) -> str | None:
    """The revision the database is at (None: no jobcharts schema or a pre-Alembic one)."""
    found = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return found.get_current_revision() or _legacy(conn)


def _legacy(conn: Connection) -> str | None:
    """Our revision in the shared ``alembic_version`` (a database of an older jobcharts)."""
    if not inspect(conn).has_table(LEGACY_TABLE):
        return None
    rows = conn.execute(text(f"SELECT version_num FROM {LEGACY_TABLE}")).scalars().all()  # noqa: S608
    ours = [r for r in rows if r in _ours()]
    return ours[0] if ours else None


def adopt_legacy(conn: Connection) -> None:
    """Move our row out of the shared ``alembic_version`` into our own version table
    (dropping the shared table only when nothing else is left in it)."""
    revision = _legacy(conn)
    if revision is None or inspect(conn).has_table(VERSION_TABLE):
        return
    conn.execute(
        text(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    )
    conn.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:v)"), {"v": revision})  # noqa: S608
    conn.execute(text(f"DELETE FROM {LEGACY_TABLE} WHERE version_num = :v"), {"v": revision})  # noqa: S608
    if not conn.execute(text(f"SELECT 1 FROM {LEGACY_TABLE}")).first():  # noqa: S608
        conn.execute(text(f"DROP TABLE {LEGACY_TABLE}"))


def uses_legacy(conn: Connection) -> bool:
    return not inspect(conn).has_table(VERSION_TABLE) and _legacy(conn) is not None


def has_tables(conn: Connection) -> bool:
    return inspect(conn).has_table("jobs")


def upgrade(conn: Connection, target: str = "head") -> None:
    """Migrate the database behind ``conn`` (in its open transaction) to ``target``."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK})
    adopt_legacy(conn)
    command.upgrade(_config(conn), target)


def differences(conn: Connection) -> list[object]:
    """What the tables behind ``conn`` lack or have beyond head's schema (empty: identical)."""
    context = MigrationContext.configure(
        conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
    )
    return list(compare_metadata(context, metadata))


def stamp_head(conn: Connection) -> None:
    """Record head as the revision of tables found to be exactly head's schema."""
    command.stamp(_config(conn), "head")
    log.warning(
        "jobcharts: %s had no revision recorded but its tables are exactly revision %s; "
        "recorded it again",
        VERSION_TABLE,
        head(),
    )


def check(conn: Connection, url: str) -> str:
    """'ok', 'fresh' (create it), 'unstamped' (head's tables, the revision row lost: stamp
    it) or raise SchemaMismatch saying what to do."""
    found = current(conn)
    if found == head():
        return "ok"
    if found is None and not has_tables(conn):
        return "fresh"
    if found is None:
        diff = differences(conn)
        if not diff:
            return "unstamped"
        raise SchemaMismatch(
            f"{url} has jobcharts tables but no revision recorded in {VERSION_TABLE}, and "
            f"they differ from this jobcharts' schema ({len(diff)} differences, first: "
            f"{diff[0]}). Restore the revision row, or start from an empty database."
        )
    if found is not None and found not in _ours():
        raise SchemaMismatch(
            f"{url} is at schema revision {found}, which this jobcharts does not know: it was "
            "migrated by a newer version. Upgrade jobcharts before running it on this database."
        )
    raise SchemaMismatch(
        f"{url} is at schema revision {found or '(none)'} but this jobcharts needs "
        f"{head()}: run `jobcharts migrate --db URL` first."
    )
