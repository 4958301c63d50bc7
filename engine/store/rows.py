"""The plain typed rows the store takes and returns: callers never see SQLAlchemy objects.

``JobRow`` mirrors the ``jobs`` table column for column; the others are what one write or
one read needs. All immutable: a row read is a snapshot, not a live handle.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple


class CorruptTime(datetime):
    """A stored timestamp that no longer parses: read as the Unix epoch (so sorting and
    arithmetic never fail) with the raw text kept, so the row is set aside, not fatal."""

    raw: str

    def __new__(cls, raw: str) -> CorruptTime:
        value = super().__new__(cls, 1970, 1, 1, tzinfo=UTC)
        value.raw = raw
        return value

    def __repr__(self) -> str:
        return f"CorruptTime({self.raw!r})"

    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return f"(corrupt: {self.raw!r})"

    __str__ = isoformat


def parse_time(raw: Any) -> datetime:
    """A timestamp as read from either backend: aware UTC, or ``CorruptTime`` when SQLite
    text no longer parses (one bad row must not fail every query that reads it)."""
    value: datetime
    if isinstance(raw, str):
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            return CorruptTime(raw)
    else:
        value = raw
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if value.tzinfo is UTC else value.astimezone(UTC)


def corrupt_columns(row: JobRow) -> list[str]:
    """The columns of ``row`` that no longer read back (CorruptTime, CorruptJSON payload)."""
    return [
        name
        for name, value in zip(JOB_COLUMNS, row, strict=True)
        if isinstance(value, CorruptTime) or (name == "payload" and isinstance(value, CorruptJSON))
    ]


@dataclass(frozen=True)
class CorruptJSON:
    """A stored JSON column that no longer parses: kept raw so one bad row fails alone."""

    raw: str
    error: str


class JobRow(NamedTuple):
    """One job as stored (see ``engine.store.schema.jobs`` for what each column means).

    A named tuple, in the table's column order: a claim builds hundreds of these per
    transaction, and a tuple is built ten times faster than a frozen dataclass."""

    id: int
    kind: str
    chart: str
    state: str
    payload: Any  # JSON, or CorruptJSON when the stored text no longer parses
    result: Any
    idempotency_key: str | None
    attempt: int
    max_attempts: int
    priority: int
    queue: str
    due_at: datetime | None
    deadline: datetime | None
    lease_token: str | None
    lease_expires_at: datetime | None
    started_at: datetime | None
    version: int
    correlation_id: str
    last_error_class: str | None
    last_error_message: str | None
    last_error_traceback: str | None
    quarantine_reason: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    cancel_requested_at: datetime | None
    chart_version: str | None  # None: written before chart versions were recorded
    trace_context: str | None  # the traceparent of the span that enqueued it
    cancel_requested_by: str | None = None  # who asked for the pending cancel (if known)


JOB_COLUMNS = JobRow._fields


class EventRecord(NamedTuple):
    """One row of a job's history, as read back."""

    trigger: str
    from_state: str | None
    to_state: str
    attempt: int
    at: datetime
    worker: str | None
    detail: dict[str, Any] | None


EVENT_COLUMNS = EventRecord._fields


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A dedupe key: the job holding it, until when, and the job's end once it is pruned."""

    kind: str
    key: str
    job_id: int
    created_at: datetime
    expires_at: datetime
    final_state: str | None
    result: Any


class NewJob(NamedTuple):
    """A job about to be inserted, with what its creation event records.

    Its times are relative to the insert (the store's ``now``, possibly the database's
    clock): due ``delay`` after it unless ``due_at`` is fixed; its dedupe key reusable
    ``key_ttl`` after it (once the job is final). A named tuple: an enqueue_many of
    1,000 builds 1,000 of them, and a frozen dataclass of 17 fields took 7 us each.
    """

    kind: str
    chart: str
    state: str
    payload: str  # JSON text (serialized once, where its size is checked)
    idempotency_key: str | None
    max_attempts: int
    priority: int
    queue: str
    correlation_id: str
    trigger: str  # the creation event's trigger
    worker: str | None = None  # who created it (the event's worker)
    detail: dict[str, Any] | None = None  # the creation event's detail
    due_at: datetime | None = None
    delay: timedelta = timedelta(0)
    key_ttl: timedelta = timedelta(0)
    chart_version: str | None = None
    trace_context: str | None = None


@dataclass(frozen=True)
class EventRow:
    """One history row to append with a state change."""

    trigger: str
    from_state: str | None
    to_state: str
    attempt: int
    at: datetime
    worker: str | None = None
    detail: dict[str, Any] | None = None


@dataclass(frozen=True)
class Move:
    """A guarded state change: apply ``values`` only if the row still matches ``expect``."""

    job_id: int
    from_state: str
    version: int
    lease_token: str | None
    values: dict[str, Any]
    event: EventRow
    unless_cancelled: bool = False  # also require that no cancel was requested meanwhile


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """What a pass needs of a stored schedule: its last slot and whether the job fired
    for it is still unfinished (a job pruned since counts as finished)."""

    last_slot: datetime | None
    last_job_id: int | None
    previous_unfinished: bool


@dataclass(frozen=True, slots=True)
class FirstSeen:
    """A schedule's first row: it starts from ``last_slot`` (the latest slot <= now)."""

    name: str
    kind: str
    spec: str
    last_slot: datetime | None


@dataclass(frozen=True, slots=True)
class ScheduleListing:
    """A stored schedule with the state of its last job (``jobcharts schedules``)."""

    name: str
    kind: str
    spec: str
    last_slot: datetime | None
    last_job_id: int | None
    fired_at: datetime | None
    last_job_state: str | None
