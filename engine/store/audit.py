"""SQL the harnesses (chaos, partition, bench) check a run with, and bench's synthetic rows.

Read-only audits of the whole database, plus one bulk insert of rows that skip the
lifecycle (no key, no event) to size a table; nothing in the engine itself calls these.
``Store`` inherits them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from itertools import islice
from typing import Any

from sqlalchemy import and_, func, insert, select

from engine.store.database import Database
from engine.store.schema import job_events, jobs


@dataclass(frozen=True, slots=True)
class HistoryStep:
    """One transition in a job's history, as the chart validates it."""

    trigger: str
    from_state: str | None
    to_state: str


@dataclass(frozen=True, slots=True)
class JobHistory:
    """A job's outcome (state, attempts, whether final) and its history, oldest first."""

    id: int
    state: str
    attempt: int
    finished_at: datetime | None
    steps: tuple[HistoryStep, ...]


@dataclass(frozen=True, slots=True)
class BulkJob:
    """The columns of a synthetic job row inserted as it is (``job_insert_bulk``)."""

    kind: str
    chart: str
    state: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    priority: int
    queue: str
    version: int
    correlation_id: str
    created_at: datetime
    updated_at: datetime
    due_at: datetime | None
    finished_at: datetime | None


_BULK_COLUMNS = tuple(f.name for f in fields(BulkJob))


class AuditQueries(Database):
    """Whole-database audits for the harnesses; mixed into ``Store``."""

    def audit_histories(self) -> list[JobHistory]:
        """Every job with its full history, read in one snapshot: a chaos run checks them all."""
        job_stmt = select(jobs.c.id, jobs.c.state, jobs.c.attempt, jobs.c.finished_at).order_by(
            jobs.c.id
        )
        event_stmt = select(
            job_events.c.job_id,
            job_events.c.trigger,
            job_events.c.from_state,
            job_events.c.to_state,
        ).order_by(job_events.c.job_id, job_events.c.id)
        with self.read() as conn:
            rows = conn.execute(job_stmt).all()
            events = conn.execute(event_stmt).all()
        steps: dict[int, list[HistoryStep]] = {}
        for job_id, trigger, from_state, to_state in events:
            steps.setdefault(int(job_id), []).append(HistoryStep(trigger, from_state, to_state))
        return [
            JobHistory(int(job_id), state, int(attempt), finished_at, tuple(steps.get(job_id, ())))
            for job_id, state, attempt, finished_at in rows
        ]

    def audit_event_count(self, triggers: Iterable[str] | None = None) -> int:
        """How many history rows exist (of ``triggers`` only, if given): bench checks that a
        run persisted all of them, a partition run counts the rescues during its cut, a
        chaos run waits for the first start before it kills."""
        stmt = select(func.count()).select_from(job_events)
        if triggers is not None:
            stmt = stmt.where(job_events.c.trigger.in_(list(triggers)))
        with self.read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def audit_holding(self, worker: str, state: str, trigger: str) -> int:
        """How many jobs in ``state`` whose current attempt ``worker`` began (its ``trigger``
        event) and whose handler has started: a partition run cuts a host off only while
        its handlers run (a claim not yet started would only be released)."""
        stmt = (
            select(func.count())
            .select_from(
                jobs.join(
                    job_events,
                    and_(
                        job_events.c.job_id == jobs.c.id,
                        job_events.c.attempt == jobs.c.attempt,
                        job_events.c.trigger == trigger,
                    ),
                )
            )
            .where(
                jobs.c.state == state,
                job_events.c.worker == worker,
                jobs.c.started_at.is_not(None),
            )
        )
        with self.read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def job_insert_bulk(self, rows: Iterable[BulkJob], chunk: int = 10_000) -> int:
        """Insert synthetic job rows as they are (no key, no event) in one transaction, ``chunk``
        rows a statement: bench fills a table to time a claim; returns how many were inserted."""
        count = 0
        with self.write() as conn:
            for params in _chunks(rows, chunk):
                conn.execute(insert(jobs), params)
                count += len(params)
        return count


def _chunks(rows: Iterable[BulkJob], size: int) -> Iterator[list[dict[str, Any]]]:
    """Statement parameters, ``size`` rows at a time (a row repeated reuses its dict)."""
    last: BulkJob | None = None
    params: dict[str, Any] = {}
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        out = []
        for row in batch:
            if row is not last:
                last, params = row, {name: getattr(row, name) for name in _BULK_COLUMNS}
            out.append(params)
        yield out
