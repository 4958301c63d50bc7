"""A database to talk to: the URL, the SQLAlchemy engine, read and write transactions.

The base of the store's query classes (``ReadQueries``, ``AuditQueries``, ``Store``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.engine import Engine as SAEngine

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
        # executemany rowcounts tell whether every compare-and-set of a batch applied.
        self._sane_multi_rowcount = bool(self.db.dialect.supports_sane_multi_rowcount)

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

    def close(self) -> None:
        self.db.dispose()
