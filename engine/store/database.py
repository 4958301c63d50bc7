"""A database to talk to: the URL, the SQLAlchemy engine, read and write transactions.

The base of the store's query classes (``ReadQueries``, ``AuditQueries``, ``Store``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import DBAPIError

from engine.store.connect import make_engine, resolve_url


class Database:
    """One database URL (SQLite file or PostgreSQL) and its connection pool."""

    def __init__(
        self,
        url: str | None = None,
        *,
        busy_timeout: float = 30.0,
        pool_size: int = 5,
        max_overflow: int = 10,
    ) -> None:
        self.url = resolve_url(url)
        self.db: SAEngine = make_engine(self.url, busy_timeout, pool_size, max_overflow)
        self.dialect = self.db.dialect.name

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (SQLite: BEGIN IMMEDIATE, so writers queue instead of failing)."""
        with self.db.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction that takes no write lock."""
        with self.db.connect() as conn:
            conn = conn.execution_options(sqlite_begin="DEFERRED")
            with conn.begin():
                yield conn

    @contextmanager
    def sqlite_write(self) -> Iterator[Any]:
        """A sqlite3 cursor in a new write transaction (BEGIN IMMEDIATE), committed on exit.

        For the enqueue path, where SQLAlchemy's execution layer would cost more than the
        statements. Driver errors come out as SQLAlchemy's, as everywhere else.
        """
        try:
            raw = self.db.raw_connection()
            try:
                driver = raw.driver_connection
                cursor = driver.cursor()  # type: ignore[union-attr]
                cursor.execute("BEGIN IMMEDIATE")
                try:
                    yield cursor
                    cursor.execute("COMMIT")
                except BaseException:
                    if driver.in_transaction:  # type: ignore[union-attr]
                        cursor.execute("ROLLBACK")
                    raise
            finally:
                raw.close()  # back to the pool
        except sqlite3.Error as error:
            raise DBAPIError.instance(
                None, None, error, sqlite3.Error, dialect=self.db.dialect
            ) from error

    @contextmanager
    def pg_autocommit(self) -> Iterator[Any]:
        """A psycopg connection in autocommit, for one statement that is its own
        transaction (the enqueue path: one round trip, without SQLAlchemy's execution
        layer). Driver errors come out as SQLAlchemy's; a broken connection is dropped."""
        from engine.store.connect import import_psycopg

        psycopg = import_psycopg()
        raw = self.db.raw_connection()
        try:
            driver: Any = raw.driver_connection
            driver.autocommit = True
            try:
                yield driver
            finally:
                if not driver.closed:
                    driver.autocommit = False
        except psycopg.Error as error:
            if isinstance(error, psycopg.OperationalError) or driver.closed:
                raw.invalidate(error)
            raise DBAPIError.instance(
                None, None, error, psycopg.Error, dialect=self.db.dialect
            ) from error
        finally:
            raw.close()

    def close(self) -> None:
        self.db.dispose()
