"""A database of its own for one harness run: a SQLite file in a temporary directory, or a
new schema of the given PostgreSQL database, dropped afterwards."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from engine.store.connect import backend_name, pg_schema_create, pg_schema_drop


@contextmanager
def scratch_database(db: str | None, prefix: str = "bench") -> Iterator[str]:
    """Yield the URL of a fresh, empty database; remove it on exit.

    ``db``: None for SQLite (a file with the default settings: WAL, synchronous=FULL), or
    a PostgreSQL URL whose database receives a new schema.
    """
    if db is None:
        with tempfile.TemporaryDirectory(prefix=f"jobcharts-{prefix}-") as tmp:
            yield f"sqlite:///{Path(tmp) / f'{prefix}.db'}"
        return
    if backend_name(db) != "postgresql":
        raise ValueError(f"--db takes a PostgreSQL URL (SQLite runs use a fresh file): {db}")
    url = pg_schema_create(db, prefix)
    try:
        yield url
    finally:
        pg_schema_drop(url)
