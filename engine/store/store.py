"""The store: every SQL statement jobcharts runs, behind noun_verb methods (SQLAlchemy Core).

The store runs SQL and knows no lifecycle: callers pass state names (read from the chart)
and the column values a transition writes, and get plain typed rows back (``rows``). Each
state change is a compare-and-set on (id, state, version[, lease_token]) committed in the
same transaction as its event row (``cas``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Integer,
    bindparam,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from engine.errors import SchemaMismatch
from engine.store import keys, migrate
from engine.store import limits as limiting
from engine.store.audit import AuditQueries
from engine.store.cas import apply_moves, one_statement
from engine.store.inserts import insert_jobs_pg, insert_jobs_sqlite
from engine.store.limits import ScopeLimit, Usage
from engine.store.reads import ReadQueries, job_row
from engine.store.rows import JobRow, Move, NewJob
from engine.store.schema import as_utc, idempotency_keys, job_steps, jobs
from engine.store.wakeup import CHANNEL, notify

AppConnection = Connection | Session  # the caller's own open transaction (transactional enqueue)


class Store(ReadQueries, AuditQueries):
    """All persistence for one database URL (SQLite file or PostgreSQL): the reads
    (``ReadQueries``), the harnesses' audits (``AuditQueries``) and every write."""

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
                    if migrate.check(conn, self.url) == "ok":
                        return
                break  # fresh: create it below
            except SchemaMismatch:
                if pause == 1.0:
                    raise  # not another process creating it: really another version
        with self.write() as conn:  # fresh: create it (racing processes migrate once)
            if migrate.check(conn, self.url) == "fresh":
                migrate.upgrade(conn)

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
                return move.job_id
        except _Undo:
            return 0

    def job_claim_due(
        self,
        *,
        now: datetime,
        limit: int,
        kinds: Sequence[str],
        states: Sequence[str],
        plan: Callable[[JobRow, datetime | None], Move | None],
        queues: Sequence[str] | None = None,
    ) -> list[tuple[JobRow, Move]]:
        """Claim up to ``limit`` due jobs (priority, then due_at) in one transaction.

        ``plan`` turns each selected row into its move (the chart's claim transition);
        the moves are applied and their events appended before the transaction commits.
        ``queues``: only jobs of these queues (None: every queue).
        """
        if limit <= 0 or not kinds or (queues is not None and not queues):
            return []
        params = _claim_params(now, limit, kinds, states, queues)
        with self.write() as conn:
            self._claim_plan_hint(conn)
            rows, tx_time = self._claim_rows(
                conn, _claim_select(self.dialect, queues is not None), params
            )
            planned = [(row, move) for row in rows if (move := plan(row, tx_time)) is not None]
            applied = self._apply(conn, [move for _, move in planned])
            return [pair for pair, ok in zip(planned, applied, strict=True) if ok]

    def job_claim_limited(
        self,
        *,
        clock: Callable[[], datetime],
        limit: int,
        kinds: Sequence[str],
        states: Sequence[str],
        plan: Callable[[JobRow, datetime | None], Move | None],
        limits: Sequence[ScopeLimit],
        starts: Callable[[Move], bool],
        timer_states: Sequence[str] = (),
        queues: Sequence[str] | None = None,
    ) -> LimitedClaim:
        """``job_claim_due`` under global limits: no scope in ``limits`` gets more starts
        than its room (``starts`` tells which moves start a handler).

        ``clock`` is read once the scopes' locks are held (a wait for them must not age
        the rate window: a slot is stamped with the time its start really happens).
        A scope with no room is left out of the select, so its backlog never crowds out
        other kinds; when one fills up mid-claim, the select is repeated without it (at
        most once per scope). Timers and cancels are never counted nor held back: the jobs
        of a full scope that are due for one (in ``timer_states``, past their deadline, or
        asked to cancel) are selected after the others.
        """
        if limit <= 0 or not kinds or (queues is not None and not queues):
            return LimitedClaim([], held=False)
        # Only the scopes this claim can touch: a worker of other queues takes no lock of
        # a limited queue it never claims from.
        limits = [
            x
            for x in limits
            if (x.by == "kind" and x.name in kinds)
            or (x.by == "queue" and (queues is None or x.name in queues))
        ]
        by_key = {x.key: x for x in limits}
        with self.write() as conn:
            self._claim_plan_hint(conn)
            limiting.lock(conn, self.dialect, limits)
            now = clock()
            used = limiting.usage(conn, limits, now)
            room = {key: r for key, x in by_key.items() if (r := used[key].room(x)) is not None}
            held = self._due_in_shut_scopes(conn, room, now, kinds, states, queues)
            planned: list[tuple[JobRow, Move]] = []
            seen: set[int] = set()
            tx_time: datetime | None = None
            while len(planned) < limit:
                open_kinds = [k for k in kinds if room.get(f"kind:{k}", 1) > 0]
                shut_queues = [k[6:] for k, r in room.items() if k.startswith("queue:") and r <= 0]
                if not open_kinds:
                    break
                params = _claim_params(now, limit, open_kinds, states, queues)
                params["shut_queues"] = shut_queues
                stmt = _claim_select(self.dialect, queues is not None, bool(shut_queues))
                rows, clock_read = self._claim_rows(conn, stmt, params)
                tx_time = tx_time or clock_read
                filled = False
                for row in rows:
                    if row.id in seen or len(planned) >= limit:
                        continue
                    seen.add(row.id)
                    move = plan(row, tx_time)
                    if move is None:
                        continue
                    scopes = _scopes_of(row, room)
                    if starts(move):
                        if any(room[k] <= 0 for k in scopes):
                            held = True  # filled up by an earlier row of this claim
                            continue
                        for k in scopes:
                            room[k] -= 1
                            filled = filled or room[k] == 0
                    planned.append((row, move))
                if not filled or len(rows) < limit:
                    break
            if len(planned) < limit:
                for row in self._timed_in_shut_scopes(
                    conn, room, now, limit - len(planned), kinds, states, timer_states, queues
                ):
                    move = plan(row, tx_time) if row.id not in seen else None
                    if move is not None and not starts(move):
                        planned.append((row, move))
            applied = self._apply(conn, [move for _, move in planned])
            done = [pair for pair, ok in zip(planned, applied, strict=True) if ok]
            started: dict[str, int] = {}
            for row, move in done:  # only applied starts take rate slots
                if starts(move):
                    for k in _scopes_of(row, room):
                        started[k] = started.get(k, 0) + 1
            limiting.take_slots(conn, self.dialect, limits, used, started, now)
        frees = []
        for key, r in room.items():
            if r > 0 or by_key[key].starts is None:
                continue
            frees += [f for f in (used[key].free_at,) if f is not None]
            if key in started:  # its slots taken now free a period from now
                frees.append(now + by_key[key].period)
        return LimitedClaim(done, held=held, free_at=min(frees) if frees else None)

    def _timed_in_shut_scopes(
        self,
        conn: Connection,
        room: dict[str, int],
        now: datetime,
        limit: int,
        kinds: Sequence[str],
        states: Sequence[str],
        timer_states: Sequence[str],
        queues: Sequence[str] | None,
    ) -> list[JobRow]:
        """Due jobs of scopes with no room whose move is no start: a wait state's timer,
        a passed deadline, a cancel request. A limit holds back handlers, not timers."""
        shut_kinds = [k[5:] for k, r in room.items() if k.startswith("kind:") and r <= 0]
        shut_queues = [k[6:] for k, r in room.items() if k.startswith("queue:") and r <= 0]
        if not shut_kinds and not shut_queues:
            return []
        stmt = (
            select(jobs)
            .where(
                jobs.c.due_at.is_not(None),
                jobs.c.due_at <= now,
                jobs.c.kind.in_(list(kinds)),
                jobs.c.state.in_(list(states)),
                jobs.c.kind.in_(shut_kinds) | jobs.c.queue.in_(shut_queues),
                jobs.c.state.in_(list(timer_states))
                | (jobs.c.deadline <= now)
                | jobs.c.cancel_requested_at.is_not(None),
                *([jobs.c.queue.in_(list(queues))] if queues is not None else []),
            )
            .order_by(jobs.c.priority.desc(), jobs.c.due_at, jobs.c.id)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        return [job_row(row) for row in conn.execute(stmt)]

    def _due_in_shut_scopes(
        self,
        conn: Connection,
        room: dict[str, int],
        now: datetime,
        kinds: Sequence[str],
        states: Sequence[str],
        queues: Sequence[str] | None,
    ) -> bool:
        """Whether a job of a scope with no room is due now (it waits on the limit)."""
        shut_kinds = [k[5:] for k, r in room.items() if k.startswith("kind:") and r <= 0]
        shut_queues = [k[6:] for k, r in room.items() if k.startswith("queue:") and r <= 0]
        if not shut_kinds and not shut_queues:
            return False
        stmt = (
            select(jobs.c.id)
            .where(
                jobs.c.due_at.is_not(None),
                jobs.c.due_at <= now,
                jobs.c.kind.in_(list(kinds)),
                jobs.c.state.in_(list(states)),
                jobs.c.kind.in_(shut_kinds) | jobs.c.queue.in_(shut_queues),
                *([jobs.c.queue.in_(list(queues))] if queues is not None else []),
            )
            .limit(1)
        )
        return conn.execute(stmt).first() is not None

    def limit_usage(self, limits: Sequence[ScopeLimit], now: datetime) -> dict[str, Usage]:
        """Each limited scope's running jobs and recent starts (for ``inspect``)."""
        with self.read() as conn:
            return limiting.usage(conn, limits, now)

    def claim_plan(
        self,
        now: datetime,
        limit: int,
        kinds: Sequence[str],
        states: Sequence[str],
        queues: Sequence[str] | None = None,
    ) -> str:
        """The database's plan for a claim's select, made as a claim makes it (tests check
        that it walks the claim index, with statistics or without)."""
        params = _claim_params(now, limit, kinds, states, queues)
        query = _claim_select(self.dialect, queues is not None).params(params)
        with self.write() as conn:
            self._claim_plan_hint(conn)
            sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            explain = "EXPLAIN QUERY PLAN " if self.dialect == "sqlite" else "EXPLAIN "
            return " ".join(str(row) for row in conn.exec_driver_sql(explain + sql))

    def job_rescue_expired(
        self,
        *,
        now: datetime,
        limit: int,
        kinds: Sequence[str],
        plan: Callable[[JobRow, datetime | None], Move | None],
        exclude: Sequence[int] = (),
    ) -> list[tuple[JobRow, Move]]:
        """Apply ``plan``'s move to up to ``limit`` jobs whose lease expired before ``now``."""
        if limit <= 0 or not kinds:
            return []
        stmt = (
            select(jobs)
            .where(
                jobs.c.lease_expires_at.is_not(None),
                jobs.c.lease_expires_at < now,
                jobs.c.kind.in_(list(kinds)),
                jobs.c.id.not_in(list(exclude)),
            )
            .order_by(jobs.c.lease_expires_at, jobs.c.id)
            .limit(limit)
        )
        if self.dialect == "postgresql":  # rows another rescuer holds are skipped, not waited on
            stmt = stmt.with_for_update(skip_locked=True)
        return self._select_and_apply(stmt, plan)

    def _claim_plan_hint(self, conn: Connection) -> None:
        """PostgreSQL: walk the claim index in its order, statistics or not.

        Until autovacuum has analyzed a table just filled by a burst of enqueues, the
        planner guesses a handful of waiting rows and would sort them all instead (5 ms at
        5,000 waiting jobs, growing with the backlog). The claim's order is the index's.
        """
        if self.dialect == "postgresql":
            conn.exec_driver_sql("SET LOCAL enable_sort = off")

    def _claim_rows(
        self, conn: Connection, stmt: Any, params: dict[str, Any]
    ) -> tuple[list[JobRow], datetime | None]:
        """The claim's rows, and on PostgreSQL the server's clock read with them (the rows
        are locked without waiting: SKIP LOCKED), in the same round trip."""
        result = conn.execute(stmt, params)
        if self.dialect != "postgresql":
            return [job_row(row) for row in result], None
        raw = result.all()
        clock = as_utc(raw[0][-1]) if raw else None
        return [job_row(row[:-1]) for row in raw], clock

    def _select_and_apply(
        self,
        stmt: Any,
        plan: Callable[[JobRow, datetime | None], Move | None],
        params: dict[str, Any] | None = None,
    ) -> list[tuple[JobRow, Move]]:
        """Select rows (locked), plan a move for each, apply the moves: one transaction.

        ``plan`` also gets the database's time read once the rows are locked (PostgreSQL;
        None on SQLite, whose write lock is taken before the select), on the same connection.
        """
        tx_time = None
        with self.write() as conn:
            rows = [job_row(row) for row in conn.execute(stmt, params)]
            if rows and self.dialect == "postgresql":
                tx_time = as_utc(conn.execute(select(func.clock_timestamp())).scalar_one())
            planned = [(row, move) for row in rows if (move := plan(row, tx_time)) is not None]
            applied = self._apply(conn, [move for _, move in planned])
            return [pair for pair, ok in zip(planned, applied, strict=True) if ok]

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
        self, *, finished_before: datetime, states: Sequence[str], now: datetime, limit: int = 5000
    ) -> tuple[int, int]:
        """Delete final jobs finished before a time, and expired keys of final jobs.

        A pruned job's key row keeps its final state and result until the key expires, so
        pruning never reopens a key early. Returns (jobs deleted, keys deleted).
        """
        doomed = (
            select(jobs.c.id)
            .where(
                jobs.c.finished_at.is_not(None),
                jobs.c.finished_at <= finished_before,
                jobs.c.state.in_(list(states)),
            )
            .limit(limit)
        )
        with self.write() as conn:
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
        single = one_statement(moves) if self.dialect == "postgresql" and not due else None
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

    def job_request_cancel(self, move_from: JobRow, now: datetime) -> bool:
        """Ask the handler holding this job's lease to stop (the row is otherwise unchanged:
        its version stays, so the holder can still commit, and then sees the request)."""
        stmt = (
            update(jobs)
            .where(
                jobs.c.id == move_from.id,
                jobs.c.state == move_from.state,
                jobs.c.version == move_from.version,
                jobs.c.lease_token == move_from.lease_token,
            )
            .values(cancel_requested_at=now)
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

    # -- helpers -------------------------------------------------------------------------

    def _apply(self, conn: Connection, moves: Sequence[Move]) -> list[bool]:
        return apply_moves(conn, moves, self.dialect)


def _scopes_of(row: JobRow, room: dict[str, int]) -> list[str]:
    """The limited scopes (of ``room``) a job counts against: its kind's, its queue's."""
    return [k for k in (f"kind:{row.kind}", f"queue:{row.queue}") if k in room]


@dataclass
class LimitedClaim:
    """A claim under limits: the moves applied, and whether a due job waits on a scope
    with no room (``free_at``: when a full rate frees a slot; None: when a job ends)."""

    pairs: list[tuple[JobRow, Move]]
    held: bool
    free_at: datetime | None = None


@cache
def _claim_select(dialect: str, by_queue: bool, shut: bool = False) -> Any:
    """The claim's select, built once per backend (its values are bound parameters).

    ``shut``: also leave out the queues at a global limit (the ``shut_queues`` parameter).
    """
    # Walk the claim index in (priority, due_at) order and stop after ``limit`` rows,
    # however many finished jobs the table holds. Without statistics (SQLite never has
    # them; PostgreSQL lacks them until autovacuum analyzes a table just filled by a burst
    # of enqueues) a planner would rather use the kind or state index and sort every
    # waiting job, so those terms are made unindexable.
    kind: ColumnElement[str] = jobs.c.kind.concat("")
    state: ColumnElement[str] = jobs.c.state.concat("")
    columns: list[Any] = [jobs]
    if dialect == "postgresql":  # the lease's start, read with the rows (_claim_rows)
        columns.append(func.clock_timestamp())
    stmt = (
        select(*columns)
        .where(
            jobs.c.due_at.is_not(None),
            jobs.c.due_at <= bindparam("now"),
            kind.in_(bindparam("kinds", expanding=True)),
            state.in_(bindparam("states", expanding=True)),
            *([jobs.c.queue.in_(bindparam("queues", expanding=True))] if by_queue else []),
            *([jobs.c.queue.not_in(bindparam("shut_queues", expanding=True))] if shut else []),
        )
        .order_by(jobs.c.priority.desc(), jobs.c.due_at, jobs.c.id)
        .limit(bindparam("limit", type_=Integer))
    )
    return stmt.with_for_update(skip_locked=True) if dialect == "postgresql" else stmt


def _claim_params(
    now: datetime,
    limit: int,
    kinds: Sequence[str],
    states: Sequence[str],
    queues: Sequence[str] | None,
) -> dict[str, Any]:
    params = {"now": now, "limit": limit, "kinds": list(kinds), "states": list(states)}
    if queues is not None:
        params["queues"] = list(queues)
    return params


class _Undo(Exception):
    """Roll back the current write transaction and report that nothing applied."""
