"""Opening a database: the URL to use, the SQLAlchemy engine, SQLite's durability settings.

PostgreSQL needs the ``postgres`` extra (psycopg); SQLite needs nothing beyond the base
install, so nothing here imports psycopg.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from functools import partial
from typing import Any

from sqlalchemy import Connection, create_engine, event, exc
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool

from engine.errors import BadDatabaseURL, MissingExtra

DEFAULT_URL = "sqlite:///jobcharts.db"
POSTGRES_HINT = "PostgreSQL needs psycopg: pip install 'jobcharts[postgres]'"


def resolve_url(url: str | None) -> str:
    """An explicit URL, else ``$JOBCHARTS_DB``, else the embedded SQLite file; a
    PostgreSQL URL's ``?schema=NAME`` becomes the search path of its connections."""
    return with_schema(url or os.environ.get("JOBCHARTS_DB") or DEFAULT_URL)


SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def with_schema(url: str) -> str:
    """``postgresql+psycopg://.../app?schema=jobs`` as the URL libpq and SQLAlchemy take:
    jobcharts' tables live in schema ``jobs``, apart from the app's (created on first use)."""
    if "schema=" not in url:
        return url
    parsed = make_url(url)
    schema = parsed.query.get("schema")
    if parsed.get_backend_name() != "postgresql" or schema is None:
        return url
    if not isinstance(schema, str) or not SCHEMA_NAME.fullmatch(schema):
        raise BadDatabaseURL(
            f"?schema= takes one plain schema name (letters, digits, _), got {schema!r}"
        )
    rest = parsed.difference_update_query(["schema"])
    options = rest.query.get("options", "")
    options = f"{options if isinstance(options, str) else ' '.join(options)} -csearch_path={schema}"
    return rest.update_query_dict({"options": options.strip()}).render_as_string(
        hide_password=False
    )


def search_path_of(url: str) -> str | None:
    """The schema a URL's connections use (``-csearch_path=`` in its options), if any."""
    options = make_url(url).query.get("options", "")
    text = options if isinstance(options, str) else " ".join(options)
    found = text.partition("-csearch_path=")[2].split()
    return found[0] if found else None


def redact(url: str) -> str:
    """A database URL without its password, for logs."""
    return make_url(url).render_as_string(hide_password=True)


def sqlite_path(url: str) -> str | None:
    """The file behind a SQLite URL, or None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def libpq_conninfo(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg's own connection string."""
    return make_url(url).set(drivername="postgresql").render_as_string(False)


def backend_name(url: str) -> str:
    """The database kind behind ``url`` (``sqlite``, ``postgresql``), for reports and checks."""
    return make_url(url).get_backend_name()


def url_address(url: str) -> tuple[str | None, int | None]:
    """The server host and port of ``url`` (None where it names none), to relay traffic to."""
    parsed = make_url(url)
    return parsed.host, parsed.port


def url_via(url: str, host: str, port: int, options: str) -> str:
    """``url`` reached through ``host:port``, with ``options`` appended to its libpq options
    (a harness routes each worker host through its own relay address)."""
    parsed = make_url(url).set(host=host, port=port)
    current = parsed.query.get("options", "")
    return parsed.update_query_dict({"options": f"{current} {options}"}).render_as_string(
        hide_password=False
    )


def pg_schema_url(url: str, schema: str) -> str:
    """``url`` with ``schema`` as its connections' search path (one database, many runs)."""
    return (
        make_url(url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


def pg_schema_create(url: str, prefix: str) -> str:
    """Create a new, empty schema ``<prefix>_<8 hex>`` in the PostgreSQL database at ``url``
    and return the URL that uses it: each harness run gets a database of its own."""
    import_psycopg()
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _schema_command(url, "CREATE SCHEMA {}", schema)
    return pg_schema_url(url, schema)


def pg_schema_drop(url: str) -> None:
    """Drop the schema a ``pg_schema_create`` URL uses, with everything in it."""
    schema = search_path_of(url)
    if schema is None:
        raise ValueError(f"{redact(url)} names no schema to drop")
    _schema_command(url, "DROP SCHEMA IF EXISTS {} CASCADE", schema)


def _schema_command(url: str, command: str, schema: str) -> None:
    """Run ``command`` with ``schema``'s quoted name, in autocommit on its own connection."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        quoted = admin.dialect.identifier_preparer.quote_identifier(schema)
        with admin.connect() as conn:
            conn.exec_driver_sql(command.format(quoted))
    finally:
        admin.dispose()


def import_psycopg() -> Any:
    """psycopg, or a one-line MissingExtra naming the extra that installs it."""
    try:
        import psycopg
    except ModuleNotFoundError as error:
        raise MissingExtra(POSTGRES_HINT) from error
    return psycopg


def make_engine(
    url: str,
    busy_timeout: float,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout: float = 30.0,
) -> SAEngine:
    serializer = partial(json.dumps, allow_nan=False, separators=(",", ":"))
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        kwargs: dict[str, Any] = {"json_serializer": serializer}
        if memory:
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        db = create_engine(url, **kwargs)
        _configure_sqlite(db, memory, int(busy_timeout * 1000))
        return db
    if make_url(url).get_backend_name() == "postgresql":
        import_psycopg()  # the one-line hint, not a traceback from the dialect
    db = create_engine(
        url,
        json_serializer=serializer,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
    )
    _ping_when_idle(db)
    return db


PING_AFTER_IDLE = 1.0  # seconds a pooled connection may rest before it is checked on checkout


def _ping_when_idle(db: SAEngine) -> None:
    """Replace, not use, a pooled connection a server restart broke while it rested.

    SQLAlchemy's ``pool_pre_ping`` pings on every checkout: a round trip per enqueue. Only
    a connection that rested a while is pinged here; one broken while in steady use fails
    its statement, and the pool then replaces every connection (a disconnect error
    invalidates the whole pool).
    """

    @event.listens_for(db.pool, "checkin")
    def _rested_from(_dbapi: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(db.pool, "checkout")
    def _ping_if_rested(dbapi: Any, record: Any, _proxy: Any) -> None:
        rested = record.info.get("checked_in")
        if rested is None or time.monotonic() - rested < PING_AFTER_IDLE:
            return
        try:
            alive = db.dialect.do_ping(dbapi)
        except Exception as error:
            raise exc.DisconnectionError(str(error)) from error
        if not alive:
            raise exc.DisconnectionError("the connection did not answer a ping")


def _set_wal(cursor: Any, patience: float) -> None:
    """Switch to WAL. SQLite answers "locked" at once, without calling the busy handler,
    while another connection is switching a new file: wait and try again."""
    import sqlite3

    deadline = time.monotonic() + patience
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


def _configure_sqlite(db: SAEngine, memory: bool, busy_timeout_ms: int) -> None:
    """WAL + synchronous=FULL: a committed enqueue survives a crash or power loss."""

    @event.listens_for(db, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_conn.cursor()
        # The busy timeout first: switching a new file to WAL takes a lock that another
        # process opening it at the same moment may hold.
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        if not memory:
            _set_wal(cursor, busy_timeout_ms / 1000)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(db, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")
