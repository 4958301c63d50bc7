"""The database's errors as the rest of jobcharts sees them, without importing SQLAlchemy."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

DatabaseError = SQLAlchemyError  # anything the database (or the pool waiting for it) raised
DriverError = DBAPIError  # an error the database driver reported for a statement


def is_transient(error: DBAPIError) -> bool:
    """Locked, disconnected, restarting: worth retrying as is (unlike a refused value)."""
    return isinstance(error, OperationalError) or bool(error.connection_invalidated)


def driver_reason(error: DBAPIError) -> str:
    """What the driver said, without SQLAlchemy's statement dump."""
    return str(error.orig)
