"""The store: every SQL statement jobcharts runs, behind noun_verb methods (SQLAlchemy Core).

The store runs SQL and knows no lifecycle: callers pass state names (read from the chart)
and the column values a transition writes, and get plain typed rows back (``rows``). Each
state change is a compare-and-set on (id, state, version[, lease_token]) committed in the
same transaction as its event row (``cas``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from engine.errors import NoSchema, SchemaMismatch
from engine.store import keys, migrate
from engine.store.audit import AuditQueries
from engine.store.cas import one_statement
from engine.store.claims import ClaimQueries
from engine.store.connect import redact, search_path_of
from engine.store.inserts import insert_jobs_pg, insert_jobs_sqlite, insert_keyed_job_pg
from engine.store.reads import ReadQueries
from engine.store.rows import JobRow, Move, NewJob
from engine.store.schema import idempotency_keys, job_steps, jobs
from engine.store.versions import VersionQueries
from engine.store.wakeup import CHANNEL, notify

PRUNE_LOCK = 0x6A6F6270  # "jobp": one pruning transaction at a time (retention)
AppConnection = Connection | Session  # the caller's own open transaction (transactional enqueue)


class Store(ClaimQueries, ReadQueries, VersionQueries, AuditQueries):
    """All persistence for one database URL (SQLite file or PostgreSQL): the claims and
    the compare-and-set (``ClaimQueries``), the reads (``ReadQueries``), chart versions
    (``VersionQueries``), the harnesses'
    audits (``AuditQueries``) and every other write."""

    def __init__(
        self,
        url: str | None = None,
        *,
        busy_timeout: float = 30.0,
        create: bool = True,
        pool_size: int = 5,
        max_overflow: int = 10,
    ) -> None:
        super().__init__(
            url, busy_timeout=busy_timeout, pool_size=pool_size, max_overflow=max_overflow
        )
        if create:
            self.schema_create()

    def schema_create(self) -> None:
        """Create the schema of a fresh database; refuse one at another revision.

        Checked with a read first: opening the store inside a caller's open write
        transaction (transactional enqueue) must not wait for that very transaction.
        """
        for pause in (0.0, 0.1, 0.3, 1.0):
            time.sleep(pause)
            try:
                with self.read() as conn:
                    if migrate.check(conn, self.url) == "ok" and not migrate.uses_legacy(conn):
                        return
                break  # fresh (create it below), or an older jobcharts' version table
            except SchemaMismatch:
                if pause == 1.0:
                    raise  # not another process creating it: really another version
        with self.write() as conn:  # fresh: create it (racing processes migrate once)
            schema = search_path_of(self.url) if self.dialect == "postgresql" else None
            if schema is not None:  # ?schema=NAME: jobcharts' own schema in the app's database
                quoted = conn.dialect.identifier_preparer.quote_identifier(schema)
                conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
            found = migrate.check(conn, self.url)
            if found == "fresh":
                migrate.upgrade(conn)
            elif found == "unstamped":
                migrate.stamp_head(conn)
            else:
                migrate.adopt_legacy(conn)

    def require_schema(self) -> None:
        """Refuse a database without jobcharts' tables, or at another revision, creating
        nothing (read-only commands)."""
        with self.read() as conn:
            if migrate.check(conn, self.url) == "fresh":
                raise NoSchema(
                    f"{redact(self.url)} has no jobcharts tables: nothing to read there. "
                    "Check --db; a worker or an enqueue creates them (or `jobcharts migrate "
                    "--db URL`)"
                )

    def migrate(self, target: str = "head") -> tuple[str | None, str | None]:
        """Bring the schema to ``target``; returns (revision before, revision after)."""
        with self.write() as conn:
            before = migrate.current(conn)
            migrate.upgrade(conn, target)
            after = migrate.current(conn)
        return before, after

    # -- jobs ----------------------------------------------------------------------------

    def job_insert_many(
        self,
        jobs: Sequence[NewJob],
        *,
        now: datetime | None,
        connection: AppConnection | None = None,
    ) -> list[tuple[int, bool]]:
        """Insert jobs and their creation events in one transaction; dedupe each by key.

        Returns, per job, its id (or the id of the job holding its key live) and whether
        it was inserted. ``now`` stamps the rows; None lets the database's clock do it
        (PostgreSQL). With ``connection`` the rows join the caller's open transaction:
        they exist if and only if the caller commits.
        """
        if isinstance(connection, Session):
            connection = connection.connection()
        if connection is None:  # the worker's one transaction (due schedule slots) joins it
            connection = self.joined()
        if self.dialect != "postgresql":
            if now is None:
                raise ValueError("SQLite stamps new jobs with the local clock: pass now")
            if connection is not None:
                conn = connection
                return insert_jobs_sqlite(
                    lambda sql, p: conn.exec_driver_sql(sql, tuple(p)), jobs, now
                )
            with self.sqlite_write() as cursor:
                return insert_jobs_sqlite(cursor.execute, jobs, now)
        if connection is not None:
            caller = connection
            return insert_jobs_pg(caller.exec_driver_sql, jobs, now, CHANNEL)
        if all(job.idempotency_key is None for job in jobs):
            # One statement is its own transaction: one round trip, no BEGIN/COMMIT.
            with self.pg_autocommit() as driver:
                return insert_jobs_pg(lambda sql, p: driver.execute(sql, p), jobs, now, CHANNEL)
        if len(jobs) == 1:  # enqueue() with a key: two round trips
            with self.pg_autocommit() as driver:
                answer = insert_keyed_job_pg(driver, jobs[0], now, CHANNEL)
            if answer is not None:
                return [answer]
        with self.write() as conn:
            return insert_jobs_pg(conn.exec_driver_sql, jobs, now, CHANNEL)

    def job_requeue(self, move: Move, kind: str, key: str | None, expires_at: datetime) -> int:
        """Apply an operator requeue; a keyed job first takes its key back.

        Returns the job id that holds the key afterwards: ``move.job_id`` when the requeue
        applied, another job's id when that job now holds the key live (nothing applied),
        or 0 when the job changed meanwhile.
        """
        try:
            with self.write() as conn:
                if self.dialect == "postgresql":  # lock order: job row, then key (as prune)
                    conn.execute(
                        select(jobs.c.id).where(jobs.c.id == move.job_id).with_for_update()
                    )
                if key is not None:
                    keys.lock_key(conn, self.dialect, kind, key)
                    holder = keys.take_key(
                        conn, self.dialect, kind, key, move.job_id, move.event.at, expires_at
                    )
                    if holder != move.job_id:
                        return holder
                if not self._apply(conn, [move])[0]:
                    raise _Undo  # the key stays with whoever held it
                if self.dialect == "postgresql":  # due now: wake an idle worker
                    notify(conn, "requeue")
                return move.job_id
        except _Undo:
            return 0

    def job_mark_started(self, job_ids: Sequence[int], lease_token: str, now: datetime) -> set[int]:
        """Record that these jobs' handlers are starting; only jobs still under the lease
        and not asked to cancel since their claim (those must not start at all)."""
        return self._update_held(job_ids, lease_token, {"started_at": now}, unless_cancelled=True)

    def lease_renew(
        self, job_ids: Sequence[int], lease_token: str, expires_at: datetime
    ) -> set[int]:
        """Extend the lease of jobs still held under ``lease_token``; return the ones held."""
        return self._update_held(job_ids, lease_token, {"lease_expires_at": expires_at})

    def _update_held(
        self,
        job_ids: Sequence[int],
        lease_token: str,
        values: dict[str, Any],
        unless_cancelled: bool = False,
    ) -> set[int]:
        """Write ``values`` to the jobs still held under ``lease_token``; return their ids."""
        if not job_ids:
            return set()
        conditions = [jobs.c.id.in_(list(job_ids)), jobs.c.lease_token == lease_token]
        if unless_cancelled:
            conditions.append(jobs.c.cancel_requested_at.is_(None))
        stmt = update(jobs).where(*conditions).values(values).returning(jobs.c.id)
        with self.write() as conn:
            return {int(row[0]) for row in conn.execute(stmt)}

    def job_prune(
        self,
        *,
        finished_before: datetime,
        states: Sequence[str],
        now: datetime,
        limit: int = 5000,
        kinds: Sequence[str] | None = None,
        not_kinds: Sequence[str] = (),
        exclusive: bool = False,
    ) -> tuple[int, int]:
        """Delete final jobs finished before a time (of ``kinds``, or all but ``not_kinds``),
        and expired keys of final jobs.

        A pruned job's key row keeps its final state and result until the key expires, so
        pruning never reopens a key early. ``exclusive`` (PostgreSQL): do nothing while
        another transaction prunes (one worker at a time). Returns (jobs, keys) deleted.
        """
        doomed = (
            select(jobs.c.id)
            .where(
                jobs.c.finished_at.is_not(None),
                jobs.c.finished_at <= finished_before,
                jobs.c.state.in_(list(states)),
                *([jobs.c.kind.in_(list(kinds))] if kinds is not None else []),
                *([jobs.c.kind.not_in(list(not_kinds))] if not_kinds else []),
            )
            .limit(limit)
        )
        with self.write() as conn:
            if exclusive and self.dialect == "postgresql":
                taken = conn.execute(select(func.pg_try_advisory_xact_lock(PRUNE_LOCK))).scalar()
                if not taken:
                    return 0, 0
            ids = [int(r[0]) for r in conn.execute(doomed)]
            if ids:
                # Re-checked as it deletes: a job requeued since the select stays. Events
                # and steps go with their job (ON DELETE CASCADE).
                gone = conn.execute(
                    delete(jobs)
                    .where(
                        jobs.c.id.in_(ids),
                        jobs.c.finished_at.is_not(None),
                        jobs.c.finished_at <= finished_before,
                        jobs.c.state.in_(list(states)),
                    )
                    .returning(jobs.c.id, jobs.c.state, jobs.c.result)
                ).all()
                copies = [{"b_job": r.id, "final_state": r.state, "result": r.result} for r in gone]
                if copies:
                    conn.execute(
                        update(idempotency_keys)
                        .where(idempotency_keys.c.job_id == bindparam("b_job"))
                        .values(final_state=bindparam("final_state"), result=bindparam("result")),
                        copies,
                    )
                ids = [r.id for r in gone]
            # A key goes only once expired and its job pruned: a kept job (quarantined,
            # say) can still be requeued and must find its key.
            keys = conn.execute(
                delete(idempotency_keys).where(
                    idempotency_keys.c.expires_at <= now,
                    ~select(jobs.c.id).where(jobs.c.id == idempotency_keys.c.job_id).exists(),
                )
            ).rowcount
        return len(ids), int(keys or 0)

    def job_transition_many(self, moves: Sequence[Move]) -> list[bool]:
        """Apply each move as a compare-and-set; return which applied (all in one transaction:
        on PostgreSQL one statement in autocommit when one statement can apply them all)."""
        if not moves:
            return []
        due = any(move.values.get("due_at") is not None for move in moves)
        alone = self.dialect == "postgresql" and not due and self.joined() is None
        single = one_statement(moves) if alone else None
        if single is not None:  # the common commit (all succeeded): one round trip
            with self.pg_autocommit() as driver:
                done = {int(row[0]) for row in driver.execute(*single)}
            return [move.job_id in done for move in moves]
        with self.write() as conn:
            applied = self._apply(conn, moves)
            if self.dialect == "postgresql" and any(
                ok and move.values.get("due_at") is not None
                for move, ok in zip(moves, applied, strict=True)
            ):
                notify(conn, "due")  # a retry, a release or a requeue may be due now
            return applied

    def job_request_cancel(self, move_from: JobRow, now: datetime, by: str | None = None) -> bool:
        """Ask the handler holding this job's lease to stop (the row is otherwise unchanged:
        its version stays, so the holder can still commit, and then sees the request);
        ``by`` names who asked."""
        stmt = (
            update(jobs)
            .where(
                jobs.c.id == move_from.id,
                jobs.c.state == move_from.state,
                jobs.c.version == move_from.version,
                jobs.c.lease_token == move_from.lease_token,
            )
            .values(cancel_requested_at=now, cancel_requested_by=by)
        )
        with self.write() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def job_park(self, row: JobRow, error_class: str, message: str) -> bool:
        """Take a held job out of every later rescue (its lease end cleared; it keeps its
        state and lease token, so nothing claims it) and record why, for an operator."""
        stmt = (
            update(jobs)
            .where(
                jobs.c.id == row.id,
                jobs.c.version == row.version,
                jobs.c.lease_token == row.lease_token,
            )
            .values(
                lease_expires_at=None,
                last_error_class=error_class,
                last_error_message=message[:2000],
                last_error_traceback="",
            )
        )
        with self.write() as conn:
            return bool(conn.execute(stmt).rowcount == 1)

    def job_force_state(self, job_id: int, state: str, chart_version: str | None) -> None:
        """Put a job in ``state`` of ``chart_version`` with no event (the generated tests'
        stand-in for a job an older version of the app left there)."""
        with self.write() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .values(state=state, chart_version=chart_version, version=jobs.c.version + 1)
            )

    def job_clear_cancel(self, job_id: int) -> None:
        """Drop a cancel request that the job's state cannot honour (it is moot)."""
        with self.write() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested_at=None))

    def step_record(
        self,
        *,
        job_id: int,
        lease_token: str | None,
        name: str,
        result: Any,
        attempt: int,
        at: datetime,
    ) -> bool:
        """Record a step's result, fenced: only while ``lease_token`` still holds the job."""
        with self.write() as conn:
            holder = conn.execute(select(jobs.c.lease_token).where(jobs.c.id == job_id)).first()
            if holder is None or holder[0] != lease_token:
                return False
            stmt = keys.dialect_insert(self.dialect, job_steps).values(
                job_id=job_id, name=name, result=result, attempt=attempt, recorded_at=at
            )
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["job_id", "name"]))
            return True


class _Undo(Exception):
    """Roll back the current write transaction and report that nothing applied."""
