"""A database to talk to: the URL, the SQLAlchemy engine, read and write transactions.

The base of the store's query classes (``ReadQueries``, ``AuditQueries``, ``Store``).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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
        self._joined = threading.local()  # this thread's one_transaction(), if open

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (SQLite: BEGIN IMMEDIATE, so writers queue instead of failing);
        inside ``one_transaction()`` on this thread, that transaction."""
        joined = self.joined()
        if joined is not None:
            yield joined
            return
        with self.db.begin() as conn:
            yield conn

    @contextmanager
    def one_transaction(self) -> Iterator[Connection]:
        """Every read and write of this thread inside runs in one write transaction,
        committed on exit and rolled back as a whole on an error.

        The worker commits finished attempts and claims the next jobs together: one
        BEGIN and one COMMIT (one fsync on SQLite) instead of two.
        """
        if self.joined() is not None:
            raise RuntimeError("one_transaction() is already open on this thread")
        with self.db.begin() as conn:
            self._joined.conn = conn
            try:
                yield conn
            finally:
                self._joined.conn = None

    def joined(self) -> Connection | None:
        """This thread's open ``one_transaction()`` connection, if any."""
        conn: Connection | None = getattr(self._joined, "conn", None)
        return conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction that takes no write lock; inside ``one_transaction()``, that
        transaction (so the reads see its own writes)."""
        joined = self.joined()
        if joined is not None:
            yield joined
            return
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
        layer), or for a transaction the caller opens with an explicit BEGIN sent with its
        first statement (psycopg's own BEGIN would take a round trip alone); an error rolls
        that back before the connection returns to the pool. Driver errors come out as
        SQLAlchemy's; a broken connection is dropped."""
        from engine.store.connect import import_psycopg

        psycopg = import_psycopg()
        raw = self.db.raw_connection()
        try:
            driver: Any = raw.driver_connection
            driver.autocommit = True
            try:
                yield driver
            except BaseException:
                idle = psycopg.pq.TransactionStatus.IDLE
                if not driver.closed and driver.info.transaction_status != idle:
                    with suppress(Exception):  # the error that brought us here is the one
                        driver.execute("ROLLBACK")
                raise
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
