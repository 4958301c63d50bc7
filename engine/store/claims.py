"""Claims: take due jobs under a lease in one transaction (with global limits when any are
declared), rescue expired leases, and apply every compare-and-set (``cas``).

Mixed into ``Store``. The claim walks ``ix_jobs_claim`` in (priority, due_at) order and
stops after ``limit`` rows, however many finished jobs the table holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, Connection, Integer, bindparam, func, select
from sqlalchemy.exc import DBAPIError

from engine.store import limits as limiting
from engine.store.cas import apply_and_commit, apply_moves
from engine.store.connect import import_psycopg
from engine.store.database import Database
from engine.store.encode import sqlite_time
from engine.store.limits import ScopeLimit, Usage
from engine.store.reads import job_row
from engine.store.rows import JobRow, Move
from engine.store.schema import as_utc, jobs

# The claim's order is its index's: without statistics PostgreSQL would rather sort.
PLAN_HINT = "SET LOCAL enable_sort = off"


class ClaimQueries(Database):
    """The claim, the rescue and the compare-and-set they apply; mixed into ``Store``."""

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
        if self.dialect == "postgresql" and self.joined() is None:
            # Alone (not inside the worker's one_transaction): the idle worker's claim of a
            # new job, the latency path. Its BEGIN rides with the select, its COMMIT with
            # the moves: two round trips, where psycopg's own BEGIN would add a third.
            with self.pg_autocommit() as driver:  # it rolls back on an error
                rows, tx_time = _pg_claim_rows(
                    driver, self.db.dialect, now, limit, kinds, states, queues, begin=True
                )
                planned = [(r, m) for r in rows if (m := plan(r, tx_time)) is not None]
                applied = apply_and_commit(driver, [move for _, move in planned])
            return [pair for pair, ok in zip(planned, applied, strict=True) if ok]
        with self.write() as conn:
            if self.dialect == "sqlite":
                rows, tx_time = _sqlite_claim_rows(conn, now, limit, kinds, states, queues), None
            else:
                driver = conn.connection.driver_connection
                rows, tx_time = _pg_claim_rows(
                    driver, conn.dialect, now, limit, kinds, states, queues
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
                shut_queues = _shut(room, "queue")
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
            oldest = used[key].free_at
            if oldest is not None:
                frees.append(oldest)
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
        waiting = _waiting_on_limits(room, now, kinds, states, queues)
        if waiting is None:
            return []
        stmt = (
            select(jobs)
            .where(
                *waiting,
                jobs.c.state.in_(list(timer_states))
                | (jobs.c.deadline <= now)
                | jobs.c.cancel_requested_at.is_not(None),
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
        waiting = _waiting_on_limits(room, now, kinds, states, queues)
        if waiting is None:
            return False
        stmt = select(jobs.c.id).where(*waiting).limit(1)
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
        if self.dialect == "sqlite":
            sql, params = _sqlite_claim(now, limit, kinds, states, queues)
        else:
            sql, params = _pg_claim(now, limit, kinds, states, queues)
        with self.write() as conn:
            self._claim_plan_hint(conn)
            explain = "EXPLAIN QUERY PLAN " if self.dialect == "sqlite" else "EXPLAIN "
            return " ".join(str(row) for row in conn.exec_driver_sql(explain + sql, tuple(params)))

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
            conn.exec_driver_sql(PLAN_HINT)

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

    def _apply(self, conn: Connection, moves: Sequence[Move]) -> list[bool]:
        return apply_moves(conn, moves, self.dialect)


def _shut(room: dict[str, int], by: str) -> list[str]:
    """The names of the scopes counted ``by`` kind or queue that have no room left."""
    prefix = f"{by}:"
    return [k[len(prefix) :] for k, r in room.items() if k.startswith(prefix) and r <= 0]


def _waiting_on_limits(
    room: dict[str, int],
    now: datetime,
    kinds: Sequence[str],
    states: Sequence[str],
    queues: Sequence[str] | None,
) -> list[ColumnElement[bool]] | None:
    """The conditions of a due job of this claim in a scope with no room (None: no scope
    is full)."""
    shut_kinds, shut_queues = _shut(room, "kind"), _shut(room, "queue")
    if not shut_kinds and not shut_queues:
        return None
    return [
        jobs.c.due_at.is_not(None),
        jobs.c.due_at <= now,
        jobs.c.kind.in_(list(kinds)),
        jobs.c.state.in_(list(states)),
        jobs.c.kind.in_(shut_kinds) | jobs.c.queue.in_(shut_queues),
        *([jobs.c.queue.in_(list(queues))] if queues is not None else []),
    ]


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


def _sqlite_claim_rows(
    conn: Connection,
    now: datetime,
    limit: int,
    kinds: Sequence[str],
    states: Sequence[str],
    queues: Sequence[str] | None,
) -> list[JobRow]:
    """The claim's select on SQLite in fixed driver SQL (the same statement as
    ``_claim_select``): it runs for every claim, where SQLAlchemy's compiling of its
    expanding lists cost more than the select itself."""
    sql, params = _sqlite_claim(now, limit, kinds, states, queues)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        raw = cursor.execute(sql, params).fetchall()
    except sqlite3.Error as error:
        raise DBAPIError.instance(sql, params, error, sqlite3.Error) from error
    finally:
        cursor.close()
    return _job_rows(conn.dialect, raw)


def _pg_claim_rows(
    driver: Any,
    dialect: Any,
    now: datetime,
    limit: int,
    kinds: Sequence[str],
    states: Sequence[str],
    queues: Sequence[str] | None,
    *,
    begin: bool = False,
) -> tuple[list[JobRow], datetime | None]:
    """The claim's select on PostgreSQL in fixed driver SQL (the same statement as
    ``_claim_select``, its lists as arrays: one text, prepared by psycopg), sent in one
    pipeline with the plan hint on ``driver`` (a psycopg connection), and with ``BEGIN``
    first when ``begin`` (an autocommit connection: psycopg would send its own BEGIN in a
    round trip of its own, in pipeline mode too). Also returns the server's clock read
    with the rows."""
    sql, params = _pg_claim(now, limit, kinds, states, queues)
    psycopg = import_psycopg()
    together = driver.pipeline() if psycopg.Pipeline.is_supported() else nullcontext()
    try:
        with driver.cursor() as hint, driver.cursor() as cursor:
            with together:
                if begin:
                    hint.execute("BEGIN")
                hint.execute(PLAN_HINT)
                cursor.execute(sql, params)
            raw = cursor.fetchall()
    except psycopg.Error as error:
        raise DBAPIError.instance(sql, params, error, psycopg.Error) from error
    if not raw:
        return [], None
    return _job_rows(dialect, [row[:-1] for row in raw]), as_utc(raw[0][-1])


def _pg_claim(
    now: datetime,
    limit: int,
    kinds: Sequence[str],
    states: Sequence[str],
    queues: Sequence[str] | None,
) -> tuple[str, list[Any]]:
    """The claim's select on PostgreSQL as driver SQL and its parameters."""
    if queues is None:
        return _PG_CLAIM, [now, list(kinds), list(states), limit]
    return _PG_CLAIM_BY_QUEUE, [now, list(kinds), list(states), list(queues), limit]


def _sqlite_claim(
    now: datetime,
    limit: int,
    kinds: Sequence[str],
    states: Sequence[str],
    queues: Sequence[str] | None,
) -> tuple[str, list[Any]]:
    """The claim's select on SQLite as driver SQL and its parameters."""
    sql = _sqlite_claim_sql(len(kinds), len(states), None if queues is None else len(queues))
    return sql, [sqlite_time(now), *kinds, *states, *(queues or ()), limit]


def _pg_claim_sql(by_queue: bool) -> str:
    queue = " AND queue = ANY(%b)" if by_queue else ""
    return (
        f"SELECT {', '.join(jobs.c.keys())}, clock_timestamp() FROM jobs"  # noqa: S608 - schema's names, bound values
        " WHERE due_at IS NOT NULL AND due_at <= %s"
        " AND (kind || '') = ANY(%b) AND (state || '') = ANY(%b)"
        f"{queue} ORDER BY priority DESC, due_at, id LIMIT %s FOR UPDATE SKIP LOCKED"
    )


_PG_CLAIM = _pg_claim_sql(by_queue=False)
_PG_CLAIM_BY_QUEUE = _pg_claim_sql(by_queue=True)


@cache
def _sqlite_claim_sql(kinds: int, states: int, queues: int | None) -> str:
    def marks(n: int) -> str:
        return ", ".join("?" * n)

    by_queue = "" if queues is None else f" AND queue IN ({marks(queues)})"
    return (
        f"SELECT {', '.join(jobs.c.keys())} FROM jobs"  # noqa: S608 - schema's names, bound values
        " WHERE due_at IS NOT NULL AND due_at <= ?"
        f" AND (kind || '') IN ({marks(kinds)}) AND (state || '') IN ({marks(states)})"
        f"{by_queue} ORDER BY priority DESC, due_at, id LIMIT ?"
    )


_processors: dict[str, list[Any]] = {}


def _job_rows(dialect: Any, raw: Sequence[Sequence[Any]]) -> list[JobRow]:
    """Driver rows of ``jobs`` (every column, in table order) as typed rows."""
    convert = _result_processors(dialect)
    return [
        job_row([f(v) if f is not None else v for f, v in zip(convert, row, strict=True)])
        for row in raw
    ]


def _result_processors(dialect: Any) -> list[Any]:
    """Each ``jobs`` column's conversion of what the driver returns (as SQLAlchemy's)."""
    found = _processors.get(dialect.name)
    if found is None:
        found = [column.type.result_processor(dialect, None) for column in jobs.columns]
        _processors[dialect.name] = found
    return found


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
