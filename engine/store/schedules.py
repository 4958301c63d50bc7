"""SQL for the ``schedules`` table: one row per schedule, its last slot advanced by
compare-and-set in the same transaction as the jobs it fires (SQLAlchemy Core).

Two schedulers racing for one slot both plan to fire it; the first to commit moves
``last_slot`` on, and the other's compare-and-set then matches no row, so it inserts
nothing. The slot's own dedupe key (``idempotency_keys``) is a second, independent guard.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update

from engine.store.keys import dialect_insert
from engine.store.rows import FirstSeen, NewJob, ScheduleListing, ScheduleState
from engine.store.schema import jobs, schedules
from engine.store.store import Store


class ScheduleStore:
    """The ``schedules`` table, on the connections (and dialect) of an engine's Store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def states(self, names: Sequence[str]) -> dict[str, ScheduleState]:
        """The stored state of each named schedule that has a row (one query)."""
        if not names:
            return {}
        stmt = (
            select(
                schedules.c.name,
                schedules.c.last_slot,
                schedules.c.last_job_id,
                jobs.c.id.label("job_present"),
                jobs.c.finished_at,
            )
            .select_from(schedules.outerjoin(jobs, jobs.c.id == schedules.c.last_job_id))
            .where(schedules.c.name.in_(list(names)))
        )
        with self.store.read() as conn:
            return {
                row.name: ScheduleState(
                    last_slot=row.last_slot,
                    last_job_id=row.last_job_id,
                    previous_unfinished=row.job_present is not None and row.finished_at is None,
                )
                for row in conn.execute(stmt)
            }

    def insert_first(self, rows: Sequence[FirstSeen], now: datetime) -> None:
        """Create the rows of schedules seen for the first time; a row another scheduler
        created meanwhile is kept as it is (its start wins)."""
        if not rows:
            return
        stmt = dialect_insert(self.store.dialect, schedules).on_conflict_do_nothing(
            index_elements=["name"]
        )
        params = [
            {
                "name": row.name,
                "kind": row.kind,
                "spec": row.spec,
                "last_slot": row.last_slot,
                "updated_at": now,
            }
            for row in rows
        ]
        with self.store.write() as conn:
            conn.execute(stmt, params)

    def advance(
        self,
        *,
        name: str,
        kind: str,
        spec: str,
        old: datetime | None,
        new: datetime,
        jobs_to_fire: Sequence[NewJob],
        now: datetime,
    ) -> list[tuple[int, bool]] | None:
        """Move ``last_slot`` from ``old`` to ``new`` and insert the slots' jobs, atomically.

        Returns (job id, inserted) per job, or None when ``last_slot`` is no longer ``old``
        (another scheduler got there first): then nothing is written. The compare-and-set
        runs first, so a loser inserts nothing and never waits on the winner's key locks.
        """
        cas = (
            update(schedules)
            .where(schedules.c.name == name, schedules.c.last_slot.is_not_distinct_from(old))
            .values(last_slot=new, kind=kind, spec=spec, updated_at=now)
        )
        with self.store.write() as conn:
            if conn.execute(cas).rowcount != 1:
                return None
            if not jobs_to_fire:
                return []
            results = self.store.job_insert_many(jobs_to_fire, now=now, connection=conn)
            conn.execute(
                update(schedules)
                .where(schedules.c.name == name)
                .values(last_job_id=results[-1][0], fired_at=now)
            )
            return results

    def listing(self) -> dict[str, ScheduleListing]:
        """Every stored schedule with the state of its last job (for ``jobcharts schedules``)."""
        stmt = select(
            schedules.c.name,
            schedules.c.kind,
            schedules.c.spec,
            schedules.c.last_slot,
            schedules.c.last_job_id,
            schedules.c.fired_at,
            jobs.c.state.label("last_job_state"),
        ).select_from(schedules.outerjoin(jobs, jobs.c.id == schedules.c.last_job_id))
        with self.store.read() as conn:
            return {row.name: ScheduleListing(*row) for row in conn.execute(stmt)}
