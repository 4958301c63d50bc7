"""The SQL of ``jobcharts stats`` (``engine.stats``): plain functions over a ``Store``.

All reads, in one read transaction that sees one snapshot (no write lock). Which state is
the quarantine and which trigger starts an attempt are the caller's to say: the store knows
no lifecycle. What each query costs on a large table is written beside it; the window's
event queries filter on ``job_events.at``, which has no index of its own (``window_events``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Connection,
    case,
    false,
    func,
    literal_column,
    select,
)

from engine.store.database import Database
from engine.store.schema import job_events, jobs


class StateCount(NamedTuple):
    """Jobs of one kind in one state; ``final``: the state is final (``finished_at`` set)."""

    kind: str
    state: str
    final: bool
    jobs: int


class FinishedCount(NamedTuple):
    """Jobs of one kind whose ``finished_at`` falls in the window, by the final state."""

    kind: str
    state: str
    jobs: int


class EventCount(NamedTuple):
    """Events of one kind's jobs in the window with one trigger; ``error``: their detail
    records an error (the transition recorded one: a failed attempt)."""

    kind: str
    trigger: str
    error: bool
    events: int


class StartRow(NamedTuple):
    """One start in the window, with the job's event just before it (None: none left)."""

    kind: str
    at: datetime
    previous_at: datetime | None
    previous_detail: Any  # the previous event's detail: a dict, None, or CorruptJSON


class DueRow(NamedTuple):
    """The unfinished job due the longest: waiting to be claimed since ``due_at``."""

    id: int
    kind: str
    state: str
    due_at: datetime


class ReasonCount(NamedTuple):
    """Quarantined jobs of one kind with one reason (None: no reason recorded)."""

    kind: str
    reason: str | None
    jobs: int


@dataclass(frozen=True)
class StatsRows:
    """Everything ``engine.stats`` computes its figures from, read in one transaction."""

    counts: list[StateCount]
    finished: list[FinishedCount]
    events: list[EventCount]
    starts: list[StartRow]
    oldest_due: DueRow | None
    reasons: list[ReasonCount]


def stats_read(
    store: Database,
    *,
    now: datetime,
    since: datetime,
    start_trigger: str,
    quarantined: str,
    sample: int,
) -> StatsRows:
    """The rows behind the figures: counts now, and what happened in (``since``, ``now``].

    ``start_trigger``: the trigger of the event that starts an attempt; ``quarantined``:
    the state quarantined jobs are in; ``sample``: at most this many starts (the latest).
    """
    with _snapshot(store) as conn:
        return StatsRows(
            counts=state_counts(conn),
            finished=finished_counts(conn, since, now),
            events=window_events(conn, store.dialect, since, now),
            starts=start_sample(conn, start_trigger, since, now, sample),
            oldest_due=oldest_due(conn, now),
            reasons=quarantine_reasons(conn, quarantined),
        )


@contextmanager
def _snapshot(store: Database) -> Iterator[Connection]:
    """A read transaction whose statements all see one snapshot, so the figures agree with
    each other (PostgreSQL: REPEATABLE READ, read only; a SQLite read transaction is one
    snapshot already)."""
    if store.dialect != "postgresql":
        with store.read() as conn:
            yield conn
        return
    with store.db.connect() as conn:
        conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
        with conn.begin():
            yield conn


def state_counts(conn: Connection) -> list[StateCount]:
    """Jobs per (kind, state), split into unfinished and finished (``finished_at`` set).

    The totals are a scan of ``jobs`` (no index holds both kind and state); the unfinished
    ones come from ``ix_jobs_finished`` (its NULLs), so telling them apart costs a read of
    the unfinished jobs only, not a second column of every row.
    """
    total = select(jobs.c.kind, jobs.c.state, func.count()).group_by(jobs.c.kind, jobs.c.state)
    unfinished = (
        select(jobs.c.kind, jobs.c.state, func.count())
        .where(jobs.c.finished_at.is_(None))
        .group_by(jobs.c.kind, jobs.c.state)
    )
    waiting = {(k, s): int(n) for k, s, n in conn.execute(unfinished)}
    found = []
    for kind, state, n in sorted(conn.execute(total)):
        left = waiting.get((kind, state), 0)
        if left:
            found.append(StateCount(kind, state, False, left))
        if int(n) > left:
            found.append(StateCount(kind, state, True, int(n) - left))
    return found


def finished_counts(conn: Connection, since: datetime, until: datetime) -> list[FinishedCount]:
    """Jobs finished in (``since``, ``until``] per (kind, final state): ``ix_jobs_finished``."""
    stmt = (
        select(jobs.c.kind, jobs.c.state, func.count())
        .where(jobs.c.finished_at > since, jobs.c.finished_at <= until)
        .group_by(jobs.c.kind, jobs.c.state)
    )
    return [FinishedCount(k, s, int(n)) for k, s, n in conn.execute(stmt)]


def window_events(
    conn: Connection, dialect: str, since: datetime, until: datetime
) -> list[EventCount]:
    """Events in (``since``, ``until``] per (kind, trigger, error recorded).

    ``job_events.at`` has no index: this reads the whole table (a scan, then one primary
    key lookup into ``jobs`` per event of the window). An index on ``job_events (at)``
    makes it a range of the window's events.
    """
    error = _has_error(dialect)
    stmt = (
        select(jobs.c.kind, job_events.c.trigger, error, func.count())
        .select_from(job_events.join(jobs, jobs.c.id == job_events.c.job_id))
        .where(job_events.c.at > since, job_events.c.at <= until)
        .group_by(jobs.c.kind, job_events.c.trigger, error)
    )
    return [EventCount(k, t, bool(e), int(n)) for k, t, e, n in conn.execute(stmt)]


def start_sample(
    conn: Connection, trigger: str, since: datetime, until: datetime, limit: int
) -> list[StartRow]:
    """The latest ``limit`` events of ``trigger`` in (``since``, ``until``], newest first,
    each with its job's previous event (``ix_job_events_job``: one index probe each).

    The starts are found walking the primary key backwards from the newest event, so a
    window holding ``limit`` starts stops early; a quieter one reads the whole table
    (``job_events.at`` has no index).
    """
    starts = (
        select(job_events.c.id, job_events.c.job_id, job_events.c.at)
        .where(
            job_events.c.trigger == trigger,
            job_events.c.at > since,
            job_events.c.at <= until,
        )
        .order_by(job_events.c.id.desc())
        .limit(limit)
        .subquery("s")
    )
    before = job_events.alias("b")
    previous = job_events.alias("p")
    previous_id = (
        select(func.max(before.c.id))
        .where(before.c.job_id == starts.c.job_id, before.c.id < starts.c.id)
        .scalar_subquery()
    )
    stmt = (
        select(jobs.c.kind, starts.c.at, previous.c.at, previous.c.detail)
        .select_from(
            starts.join(jobs, jobs.c.id == starts.c.job_id).outerjoin(
                previous, previous.c.id == previous_id
            )
        )
        .order_by(starts.c.id.desc())
    )
    return [StartRow(*row) for row in conn.execute(stmt)]


def oldest_due(conn: Connection, now: datetime) -> DueRow | None:
    """The unfinished job with the smallest ``due_at <= now`` (ties: the lowest id).

    Over the rows of the partial index ``ix_jobs_claim`` (only jobs waiting to be claimed
    have a ``due_at``): its cost grows with the backlog, not with the finished history.
    """
    stmt = (
        select(jobs.c.id, jobs.c.kind, jobs.c.state, jobs.c.due_at)
        .where(
            jobs.c.due_at.is_not(None),
            jobs.c.due_at <= now,
            jobs.c.finished_at.is_(None),
        )
        .order_by(jobs.c.due_at, jobs.c.id)
        .limit(1)
    )
    row = conn.execute(stmt).first()
    return None if row is None else DueRow(int(row[0]), row[1], row[2], row[3])


def quarantine_reasons(conn: Connection, state: str) -> list[ReasonCount]:
    """Jobs in ``state`` per (kind, quarantine reason): ``ix_jobs_state``."""
    stmt = (
        select(jobs.c.kind, jobs.c.quarantine_reason, func.count())
        .where(jobs.c.state == state)
        .group_by(jobs.c.kind, jobs.c.quarantine_reason)
        .order_by(jobs.c.kind, jobs.c.quarantine_reason)
    )
    return [ReasonCount(k, r, int(n)) for k, r, n in conn.execute(stmt)]


def _has_error(dialect: str) -> ColumnElement[Any]:
    """Whether an event's detail has an ``error`` key (False for NULL, or unparseable
    text on SQLite, which ``json_extract`` would otherwise fail the whole query on).

    The key is inlined, not bound: the expression is grouped by, and PostgreSQL takes a
    select item and a GROUP BY item with two separate parameters for different ones."""
    detail = job_events.c.detail
    if dialect == "postgresql":
        exists = detail.op("?", return_type=Boolean)(literal_column("'error'"))
        return func.coalesce(exists, false())
    return case(
        (
            func.json_valid(detail) == 1,
            func.json_extract(detail, literal_column("'$.error'")).is_not(None),
        ),
        else_=false(),
    )
