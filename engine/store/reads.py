"""The store's reads: jobs, their histories and steps, keys, and the counts the worker,
the CLI and ``render --live`` ask for. No write lock is ever taken here."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, or_, select

from engine.store.database import Database
from engine.store.rows import (
    EVENT_COLUMNS,
    JOB_COLUMNS,
    EventRecord,
    JobRow,
    KeyRow,
    parse_time,
)
from engine.store.schema import as_utc, idempotency_keys, job_events, job_steps, jobs


class ReadQueries(Database):
    """Read-only queries; mixed into ``Store``."""

    def job_get(self, job_id: int) -> JobRow | None:
        with self.read() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        return None if row is None else job_row(row)

    def job_events(self, job_id: int) -> list[EventRecord]:
        stmt = (
            select(*(job_events.c[name] for name in EVENT_COLUMNS))
            .where(job_events.c.job_id == job_id)
            .order_by(job_events.c.id)
        )
        with self.read() as conn:
            return [EventRecord._make(row) for row in conn.execute(stmt)]

    def job_events_ends(
        self, job_id: int, head: int, tail: int
    ) -> tuple[list[EventRecord], list[EventRecord], int]:
        """A long history's first ``head`` and latest ``tail`` events and how many there
        are in all (``ix_job_events_job``: two range reads and a count, not the whole)."""
        columns = [job_events.c[name] for name in EVENT_COLUMNS]
        mine = job_events.c.job_id == job_id
        with self.read() as conn:
            total = int(
                conn.execute(select(func.count()).select_from(job_events).where(mine)).scalar_one()
            )
            first = select(*columns).where(mine).order_by(job_events.c.id).limit(head)
            heads = [EventRecord._make(row) for row in conn.execute(first)]
            if total <= head:
                return heads, [], total
            last = select(*columns).where(mine).order_by(job_events.c.id.desc())
            tails = [
                EventRecord._make(row) for row in conn.execute(last.limit(min(tail, total - head)))
            ]
        return heads, tails[::-1], total

    def job_event_counts(self, job_id: int) -> dict[tuple[str, str | None, str], int]:
        """How often the job took each (trigger, from, to): its path, without reading
        its whole history."""
        stmt = (
            select(
                job_events.c.trigger, job_events.c.from_state, job_events.c.to_state, func.count()
            )
            .where(job_events.c.job_id == job_id)
            .group_by(job_events.c.trigger, job_events.c.from_state, job_events.c.to_state)
        )
        with self.read() as conn:
            return {(r[0], r[1], r[2]): int(r[3]) for r in conn.execute(stmt)}

    def job_list(
        self, *, state: str | None = None, kind: str | None = None, limit: int = 100
    ) -> list[JobRow]:
        stmt = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if state is not None:
            stmt = stmt.where(jobs.c.state == state)
        if kind is not None:
            stmt = stmt.where(jobs.c.kind == kind)
        with self.read() as conn:
            return [job_row(row) for row in conn.execute(stmt)]

    def job_count_by_state(self) -> dict[str, int]:
        stmt = select(jobs.c.state, func.count()).group_by(jobs.c.state)
        with self.read() as conn:
            return {row[0]: int(row[1]) for row in conn.execute(stmt)}

    def job_count_by_kind_state(self) -> dict[tuple[str, str], int]:
        """Jobs per (kind, state): the metrics' gauges."""
        stmt = select(jobs.c.kind, jobs.c.state, func.count()).group_by(jobs.c.kind, jobs.c.state)
        with self.read() as conn:
            return {(row[0], row[1]): int(row[2]) for row in conn.execute(stmt)}

    def job_oldest_due_by_kind(self, now: datetime) -> dict[str, datetime]:
        """Per kind, the due time of its oldest job due now and not started."""
        stmt = (
            select(jobs.c.kind, func.min(jobs.c.due_at))
            .where(jobs.c.due_at.is_not(None), jobs.c.due_at <= now)
            .group_by(jobs.c.kind)
        )
        with self.read() as conn:
            return {row[0]: parse_time(row[1]) for row in conn.execute(stmt)}

    def chart_state_figures(
        self, chart: str, *, kind: str | None = None
    ) -> dict[str, tuple[int, datetime]]:
        """Per state of ``chart`` (jobs of ``kind`` only, when given): how many jobs are in
        it, and the oldest's last change."""
        stmt = (
            select(jobs.c.state, func.count(), func.min(jobs.c.updated_at))
            .where(jobs.c.chart == chart, *([jobs.c.kind == kind] if kind else []))
            .group_by(jobs.c.state)
        )
        with self.read() as conn:
            return {row[0]: (int(row[1]), parse_time(row[2])) for row in conn.execute(stmt)}

    def chart_edge_counts(
        self, chart: str, since: datetime, *, kind: str | None = None
    ) -> dict[tuple[str, str, str], int]:
        """Transitions of ``chart``'s jobs (of ``kind`` only, when given) taken since
        ``since``: (trigger, from, to) -> n."""
        stmt = (
            select(
                job_events.c.trigger, job_events.c.from_state, job_events.c.to_state, func.count()
            )
            .select_from(job_events.join(jobs, jobs.c.id == job_events.c.job_id))
            .where(
                jobs.c.chart == chart,
                *([jobs.c.kind == kind] if kind else []),
                job_events.c.at >= since,
                job_events.c.from_state.is_not(None),
            )
            .group_by(job_events.c.trigger, job_events.c.from_state, job_events.c.to_state)
        )
        with self.read() as conn:
            return {(r[0], r[1], r[2]): int(r[3]) for r in conn.execute(stmt)}

    def job_next_due(self, claimable: Mapping[str, Sequence[str]]) -> datetime | None:
        """The earliest due_at among jobs waiting to be claimed, or None.

        ``claimable``: kind -> the states a claim takes its jobs from (a job stranded in a
        state its chart no longer has is never due for this worker)."""
        if not claimable:
            return None
        stmt = select(func.min(jobs.c.due_at)).where(
            jobs.c.due_at.is_not(None), _in_states(claimable)
        )
        with self.read() as conn:
            value = conn.execute(stmt).scalar()
        if value is None:
            return None
        return parse_time(value)

    def job_count_unfinished(self, kinds: Sequence[str]) -> int:
        """Jobs of ``kinds`` not yet final (waiting or holding a lease)."""
        stmt = select(func.count()).where(
            jobs.c.kind.in_(list(kinds)), jobs.c.finished_at.is_(None)
        )
        with self.read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def db_now(self) -> datetime:
        """The database server's current time (PostgreSQL ``clock_timestamp()``)."""
        if self.dialect == "postgresql":  # one round trip: no BEGIN/COMMIT around it
            with self.pg_autocommit() as driver:
                return as_utc(driver.execute("SELECT clock_timestamp()").fetchone()[0])
        now = func.strftime("%Y-%m-%d %H:%M:%f", "now")
        with self.read() as conn:  # never the write lock
            value = conn.execute(select(now)).scalar_one()
        return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)

    def job_count_active(
        self,
        claimable: Mapping[str, Sequence[str]],
        now: datetime,
        queues: Sequence[str] | None = None,
    ) -> int:
        """Unfinished jobs of ``claimable``'s kinds (and ``queues``) that are due now in a
        state a claim takes them from, or held by a worker's live lease."""
        if not claimable:
            return 0
        stmt = select(func.count()).where(
            jobs.c.kind.in_(list(claimable)),
            jobs.c.finished_at.is_(None),
            or_(
                jobs.c.lease_expires_at.is_not(None),
                and_(jobs.c.due_at <= now, _in_states(claimable)),
            ),
            *([] if queues is None else [jobs.c.queue.in_(list(queues))]),
        )
        with self.read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def job_waiting_by_kind(self, now: datetime) -> dict[str, int]:
        """Due jobs per kind (to report kinds that no running worker handles)."""
        stmt = (
            select(jobs.c.kind, func.count())
            .where(jobs.c.due_at.is_not(None), jobs.c.due_at <= now)
            .group_by(jobs.c.kind)
        )
        with self.read() as conn:
            return {row[0]: int(row[1]) for row in conn.execute(stmt)}

    def job_strays(
        self, known: Mapping[str, Sequence[str]], *, after_id: int = 0, limit: int = 500
    ) -> list[JobRow]:
        """Unfinished jobs of ``known``'s kinds that no live lease holds and that a claim
        would not take as they are: in a state their kind's chart lacks (``known``: kind ->
        its chart's states), waiting with no due time, or with a timestamp that no longer
        reads back. In id order after ``after_id``, at most ``limit``."""
        if not known:
            return []
        odd: list[ColumnElement[bool]] = [jobs.c.due_at.is_(None)]
        if self.dialect == "sqlite":  # text that is not a time (PostgreSQL's type forbids it)
            odd += [
                and_(column.is_not(None), func.julianday(column).is_(None))
                for column in (jobs.c.due_at, jobs.c.deadline)
            ]
        stmt = (
            select(jobs)
            .where(
                jobs.c.id > after_id,
                jobs.c.finished_at.is_(None),
                jobs.c.lease_expires_at.is_(None),
                or_(
                    *(
                        and_(jobs.c.kind == kind, jobs.c.state.not_in(list(states)))
                        for kind, states in known.items()
                    ),
                    and_(jobs.c.kind.in_(list(known)), or_(*odd)),
                ),
            )
            .order_by(jobs.c.id)
            .limit(limit)
        )
        with self.read() as conn:
            return [job_row(row) for row in conn.execute(stmt)]

    def key_get(self, kind: str, key: str) -> KeyRow | None:
        """The dedupe row of (kind, key): job id, expiry, and final state once pruned."""
        stmt = select(idempotency_keys).where(
            idempotency_keys.c.kind == kind, idempotency_keys.c.key == key
        )
        with self.read() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else KeyRow(**row._mapping)

    def job_cancel_requested(self, job_id: int) -> bool:
        stmt = select(jobs.c.cancel_requested_at).where(jobs.c.id == job_id)
        with self.read() as conn:
            return conn.execute(stmt).scalar_one_or_none() is not None

    def job_get_many(self, job_ids: Iterable[int]) -> dict[int, JobRow]:
        ids = list(job_ids)
        if not ids:
            return {}
        with self.read() as conn:
            rows = conn.execute(select(jobs).where(jobs.c.id.in_(ids)))
            return {int(r.id): job_row(r) for r in rows}

    def step_get_many(self, job_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """Recorded step results per job: {job_id: {step name: result}}."""
        ids = list(job_ids)
        if not ids:
            return {}
        found: dict[int, dict[str, Any]] = {}
        stmt = select(job_steps.c.job_id, job_steps.c.name, job_steps.c.result).where(
            job_steps.c.job_id.in_(ids)
        )
        with self.read() as conn:
            for job_id, name, result in conn.execute(stmt):
                found.setdefault(int(job_id), {})[name] = result
        return found


def _in_states(claimable: Mapping[str, Sequence[str]]) -> ColumnElement[bool]:
    """A job of one of ``claimable``'s kinds, in one of the states given for its kind."""
    return or_(
        *(
            and_(jobs.c.kind == kind, jobs.c.state.in_(list(states)))
            for kind, states in claimable.items()
        )
    )


def job_row(row: Any) -> JobRow:
    """A selected ``jobs`` row (all its columns, in table order) as the typed row."""
    return JobRow._make(row)


if tuple(jobs.c.keys()) != JOB_COLUMNS:  # job_row relies on the order; a schema change must
    raise RuntimeError("engine.store.rows.JobRow no longer matches the jobs table's columns")
