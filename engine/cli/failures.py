"""What a failed command says: one line naming the cause and what to do, not a traceback
(``jobcharts --debug ...`` or ``$JOBCHARTS_DEBUG=1`` shows the traceback).

Exit codes: 0 done; 1 the command failed or refused (an unreachable or foreign database, a
breaking deploy, a job that cannot be changed); 2 the command line itself is wrong.
"""

from __future__ import annotations

import os

from sqlalchemy import exc
from sqlalchemy.engine import make_url

from engine.errors import JobchartsError
from engine.store import redact, resolve_url, sqlite_path

HINT = "(run with --debug for the traceback)"


def one_line(error: BaseException, db: str | None) -> str:
    """The cause of ``error`` in one line, for ``db`` (the URL the command used)."""
    if isinstance(error, JobchartsError):
        return _first(str(error))
    if isinstance(error, exc.NoSuchModuleError | exc.ArgumentError) or (
        isinstance(error, ValueError) and "URL" in str(error)
    ):
        return (
            f"{db or '$JOBCHARTS_DB'!s} is not a database URL jobcharts can open "
            "(use sqlite:///path/to/file.db or postgresql+psycopg://user@host:5432/dbname): "
            + _first(str(error))
        )
    if isinstance(error, exc.DBAPIError):
        return _database(error, db)
    return f"{type(error).__name__}: {_first(str(error))} {HINT}"


def _database(error: exc.DBAPIError, db: str | None) -> str:
    url = _safe_url(db)
    cause = _first(str(error.orig) if error.orig is not None else str(error))
    path = sqlite_path(url) if url else None
    if path is not None:
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            return f"cannot open the SQLite database {path}: directory {folder} does not exist"
        if "not a database" in cause:
            return f"{path} is not a SQLite database file (it exists, but holds something else)"
        return f"cannot use the SQLite database {path}: {cause}"
    where = redact(url) if url else "the database"
    if isinstance(error, exc.OperationalError):
        return f"cannot reach {where}: {cause} (is the server running, and the URL right?)"
    return f"{where}: {cause} {HINT}"


def _safe_url(db: str | None) -> str | None:
    try:
        url = resolve_url(db)
        make_url(url)
    except Exception:
        return None
    return url


def _first(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else "(no message)"
