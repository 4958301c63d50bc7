"""The tables: jobs (one row per job), job_events (append-only history), job_steps (ledger).

Column meaning, not state names: lifecycle state names never appear here. ``due_at`` is set
only while a job waits to be claimed (NULL while it runs or once it is final), so one
partial index serves every chart's claim query.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

SCHEMA_VERSION = 1

ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: a rowid alias, autoincrementing


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: jobcharts stores aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # raw SQL paths on SQLite
            value = datetime.fromisoformat(value)
        return as_utc(value)


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive values are taken to be UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("kind", String(200), nullable=False),
    Column("chart", String(200), nullable=False),
    Column("state", String(64), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("result", JSON(none_as_null=True), nullable=True),
    Column("idempotency_key", String(500), nullable=True),
    Column("attempt", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("queue", String(100), nullable=False, default="default"),
    Column("due_at", UTCDateTime, nullable=True),
    Column("deadline", UTCDateTime, nullable=True),
    Column("lease_token", String(32), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("version", Integer, nullable=False, default=0),
    Column("correlation_id", String(64), nullable=False),
    Column("last_error_class", String(200), nullable=True),
    Column("last_error_message", Text, nullable=True),
    Column("last_error_traceback", Text, nullable=True),
    Column("quarantine_reason", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
)

# Dedupe: the database refuses a second (kind, key); NULL keys (Invariant jobs) never clash.
Index("ux_jobs_kind_key", jobs.c.kind, jobs.c.idempotency_key, unique=True)
# Claims: highest priority first, then oldest due, only over rows waiting to be claimed.
Index(
    "ix_jobs_claim",
    jobs.c.priority.desc(),
    jobs.c.due_at,
    jobs.c.id,
    sqlite_where=jobs.c.due_at.is_not(None),
    postgresql_where=jobs.c.due_at.is_not(None),
)
Index("ix_jobs_state", jobs.c.state)

job_events = Table(
    "job_events",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("job_id", ID, ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
    Column("trigger", String(64), nullable=False),
    Column("from_state", String(64), nullable=True),
    Column("to_state", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("worker", String(200), nullable=True),
    Column("detail", JSON(none_as_null=True), nullable=True),
)
Index("ix_job_events_job", job_events.c.job_id, job_events.c.id)

job_steps = Table(
    "job_steps",
    metadata,
    Column("job_id", ID, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("result", JSON(none_as_null=True), nullable=True),
    Column("attempt", Integer, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
)
