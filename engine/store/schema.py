"""The tables: jobs (one row per job), job_events (append-only history), job_steps (ledger),
idempotency_keys (dedupe that outlives job rows), schedules (cron and poller slots),
chart_versions (every chart version seen), job_kinds (each kind's app and payload schema)
and rate_slots (the starts a rate limit allowed
lately).
Alembic migrations (engine/store/migrations) create and change them;
``jobcharts_alembic_version`` records the revision (never the app's ``alembic_version``).

Column meaning, not state names: lifecycle state names never appear here. ``due_at`` is set
only while a job waits to be claimed (NULL while it runs or once it is final), so one
partial index serves every chart's claim query.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
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
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

from engine.store.rows import CorruptJSON, parse_time

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
        return parse_time(value)  # SQLite text, or CorruptTime when it no longer parses

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        # SQLite's own DateTime processor would raise on text that is not a time, failing
        # every query that reads one bad row: the text is parsed here instead.
        def process(value: Any) -> datetime | None:
            return None if value is None else parse_time(value)

        return process


def as_utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime (naive values are taken to be UTC already)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class JSONDocument(TypeDecorator[Any]):
    """JSON text on SQLite, JSONB on PostgreSQL. NULL is SQL NULL.

    Unparseable text reads back as ``CorruptJSON`` instead of failing the whole query, so a
    corrupt row quarantines itself rather than blocking every claim that selects it.
    """

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB(none_as_null=True))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return json.dumps(value, allow_nan=False, separators=(",", ":"))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None or not isinstance(value, str) or dialect.name == "postgresql":
            return value
        try:
            return json.loads(value)
        except ValueError as error:
            return CorruptJSON(value, str(error))


metadata = MetaData()


jobs = Table(
    "jobs",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("kind", String(200), nullable=False),
    Column("chart", String(200), nullable=False),
    Column("state", String(64), nullable=False),
    Column("payload", JSONDocument, nullable=False),
    Column("result", JSONDocument, nullable=True),
    Column("idempotency_key", String(500), nullable=True),
    Column("attempt", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("priority", Integer, nullable=False, default=0),
    Column("queue", String(100), nullable=False, default="default"),
    Column("due_at", UTCDateTime, nullable=True),
    Column("deadline", UTCDateTime, nullable=True),
    Column("lease_token", String(32), nullable=True),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),  # the current attempt's handler began
    Column("version", Integer, nullable=False, default=0),
    Column("correlation_id", String(64), nullable=False),
    Column("last_error_class", String(200), nullable=True),
    Column("last_error_message", Text, nullable=True),
    Column("last_error_traceback", Text, nullable=True),
    Column("quarantine_reason", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    # An operator asked to cancel while a handler held the lease: it stops at its next step.
    Column("cancel_requested_at", UTCDateTime, nullable=True),
    # The version of its chart the job last moved under (statecharts.versions); NULL for
    # rows written before versions were recorded.
    Column("chart_version", String(16), nullable=True),
    # The W3C traceparent of the span that enqueued the job (tracing on): its attempts'
    # spans continue that trace.
    Column("trace_context", String(100), nullable=True),
    # Who asked for the pending cancel (an operator's name), read with cancel_requested_at.
    Column("cancel_requested_by", String(100), nullable=True),
    # Never reuse the id of a pruned job: dedupe keys may still point at it.
    sqlite_autoincrement=True,
)

Index("ix_jobs_kind_key", jobs.c.kind, jobs.c.idempotency_key)
# Claims: highest priority first, then oldest due, only over rows waiting to be claimed.
Index(
    "ix_jobs_claim",
    jobs.c.priority.desc(),
    jobs.c.due_at,
    jobs.c.id,
    sqlite_where=jobs.c.due_at.is_not(None),
    postgresql_where=jobs.c.due_at.is_not(None),
)
# Jobs of a state and kind in id order: lists and bulk scans read each (state, kind) in
# order and stop at a page (engine.store.bulk); the dashboard counts each up to a cap;
# the states present are a skip scan of it. (One index: a second one on state cost 8% of
# a drain on SQLite.)
Index("ix_jobs_state", jobs.c.state, jobs.c.kind, jobs.c.id)
# Rescue: running jobs by lease expiry, only over rows that hold a lease.
Index(
    "ix_jobs_lease",
    jobs.c.lease_expires_at,
    sqlite_where=jobs.c.lease_expires_at.is_not(None),
    postgresql_where=jobs.c.lease_expires_at.is_not(None),
)
Index("ix_jobs_finished", jobs.c.finished_at)

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
    Column("detail", JSONDocument, nullable=True),
)
Index("ix_job_events_job", job_events.c.job_id, job_events.c.id)

job_steps = Table(
    "job_steps",
    metadata,
    Column("job_id", ID, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("result", JSONDocument, nullable=True),
    Column("attempt", Integer, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
)

# Dedupe that outlives job rows: the database refuses a second live (kind, key). A key
# keeps the first job's id (and, once that job is pruned, its result) until expires_at.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("kind", String(200), primary_key=True),
    Column("key", String(500), primary_key=True),
    Column("job_id", ID, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("final_state", String(64), nullable=True),  # copied when the job row is pruned
    Column("result", JSONDocument, nullable=True),
)
Index("ix_idempotency_keys_expires", idempotency_keys.c.expires_at)

# One row per cron schedule or poller: the last slot fired is durable, so a restart neither
# repeats nor forgets slots, and racing schedulers advance it by compare-and-set.
schedules = Table(
    "schedules",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("kind", String(200), nullable=False),
    Column("spec", String(200), nullable=False),  # "cron */5 * * * * Europe/Paris", "every 30s"
    Column("last_slot", UTCDateTime, nullable=True),
    Column("last_job_id", ID, nullable=True),
    Column("fired_at", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)

# Every version of every chart a process of this database has registered: its structure
# (so a job is drawn and checked on the chart it ran under) and an optional human label.
chart_versions = Table(
    "chart_versions",
    metadata,
    Column("chart", String(200), primary_key=True),
    Column("version", String(16), primary_key=True),
    Column("label", String(200), nullable=True),
    Column("markup", JSONDocument, nullable=False),
    Column("first_seen_at", UTCDateTime, nullable=False),
)

# Each job kind as last registered by a worker: its app and its payload's JSON Schema, so a
# second app registering the same kind with another payload is caught, not obeyed.
job_kinds = Table(
    "job_kinds",
    metadata,
    Column("kind", String(200), primary_key=True),
    Column("app", String(300), nullable=False),
    Column("schema_hash", String(16), nullable=False),
    Column("payload_schema", JSONDocument, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# A rate limit of N starts per period owns slots 0..N-1 of its scope ("kind:send"): a start
# takes a slot last used a full period ago, so no window of one period holds N+1 starts.
rate_slots = Table(
    "rate_slots",
    metadata,
    Column("scope", String(300), primary_key=True),
    Column("slot", Integer, primary_key=True, autoincrement=False),
    Column("used_at", UTCDateTime, nullable=False),
)
