"""The store: every SQL statement jobcharts runs, behind noun_verb methods (SQLAlchemy Core).

The store runs SQL and knows no lifecycle: callers pass state names (read from the chart)
and the column values a transition writes. Each state change is a compare-and-set on
(id, state, version[, lease_token]) committed in the same transaction as its event row.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.pool import StaticPool

from engine import migrate
from engine.errors import SchemaMismatch
from engine.schema import (
    as_utc,
    idempotency_keys,
    job_events,
    job_steps,
    jobs,
)
from engine.wakeup import notify

DEFAULT_URL = "sqlite:///jobcharts.db"


def resolve_url(url: str | None) -> str:
    """An explicit URL, else ``$JOBCHARTS_DB``, else the embedded SQLite file."""
    return url or os.environ.get("JOBCHARTS_DB") or DEFAULT_URL


@dataclass(frozen=True)
class NewJob:
    """The columns of a job about to be inserted."""

    kind: str
    chart: str
    state: str
    payload: dict[str, Any]
    idempotency_key: str | None
    max_attempts: int
    priority: int
    queue: str
    due_at: datetime
    correlation_id: str
    created_at: datetime
    key_expires_at: datetime | None = None  # when the dedupe key may be reused (once final)


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
    tag: Any = field(default=None, compare=False)
    unless_cancelled: bool = False  # also require that no cancel was requested meanwhile


class Store:
    """All persistence for one database URL (SQLite file or PostgreSQL)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        busy_timeout: float = 30.0,
        create: bool = True,
        pool_size: int = 5,
        max_overflow: int = 10,
    ) -> None:
        self.url = resolve_url(url)
        self.db: SAEngine = _make_engine(self.url, busy_timeout, pool_size, max_overflow)
        self.dialect = self.db.dialect.name
        # executemany rowcounts tell whether every compare-and-set of a batch applied.
        self._sane_multi_rowcount = bool(self.db.dialect.supports_sane_multi_rowcount)
        if create:
            self.schema_create()

    # -- connection handling -------------------------------------------------------------

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (SQLite: BEGIN IMMEDIATE, so writers queue instead of failing)."""
        with self.db.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction that takes no write lock."""
        with self.db.connect() as conn:
            conn = conn.execution_options(sqlite_begin="DEFERRED")
            with conn.begin():
                yield conn

    def close(self) -> None:
        self.db.dispose()

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

    def job_insert(self, job: NewJob, created_event: EventRow) -> tuple[int, bool]:
        """Insert ``job`` unless its (kind, key) is live; return (id, inserted)."""
        return self.job_insert_many([(job, created_event)])[0]

    def job_insert_many(
        self,
        items: Sequence[tuple[NewJob, EventRow]],
        *,
        connection: Connection | None = None,
    ) -> list[tuple[int, bool]]:
        """Insert jobs and their creation events in one transaction; dedupe each by key.

        With ``connection`` the rows join the caller's open transaction: they exist if and
        only if the caller commits.
        """
        if connection is not None:
            return self._insert_many(connection, items)
        with self.write() as conn:
            return self._insert_many(conn, items)

    def _insert_many(
        self, conn: Connection, items: Sequence[tuple[NewJob, EventRow]]
    ) -> list[tuple[int, bool]]:
        results: list[tuple[int, bool]] = []
        events: list[dict[str, Any]] = []
        for job, created in items:
            job_id, inserted = self._insert_job(conn, job)
            results.append((job_id, inserted))
            if inserted:
                events.append(_event_params(job_id, created))
        if events:
            conn.execute(insert(job_events), events)
            if self.dialect == "postgresql":
                notify(conn, "enqueue")
        return results

    def _lock_key(self, conn: Connection, kind: str, key: str) -> None:
        """PostgreSQL: serialize writers of one (kind, key) for the rest of the transaction,
        so every check below sees committed state (READ COMMITTED snapshots per statement
        would otherwise let a racing writer read a job that is not committed yet as absent).
        SQLite needs nothing: its write transactions are serialized already."""
        if self.dialect == "postgresql":
            conn.execute(
                text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                {"k": f"{kind}\x1f{key}"},
            )

    def _insert_job(self, conn: Connection, job: NewJob) -> tuple[int, bool]:
        if job.idempotency_key is not None:
            self._lock_key(conn, job.kind, job.idempotency_key)
            existing = self._live_key(conn, job)
            if existing is not None:
                return existing, False
        values = {
            "kind": job.kind,
            "chart": job.chart,
            "state": job.state,
            "payload": job.payload,
            "idempotency_key": job.idempotency_key,
            "attempt": 0,
            "max_attempts": job.max_attempts,
            "priority": job.priority,
            "queue": job.queue,
            "due_at": job.due_at,
            "version": 0,
            "correlation_id": job.correlation_id,
            "created_at": job.created_at,
            "updated_at": job.created_at,
        }
        job_id = int(conn.execute(insert(jobs).values(values).returning(jobs.c.id)).scalar_one())
        if job.idempotency_key is None:
            return job_id, True
        holder = self._take_key(
            conn, job.kind, job.idempotency_key, job_id, job.created_at, job.key_expires_at
        )
        if holder != job_id:
            # A concurrent transaction took the key first (possible when the caller's
            # transaction began before that one committed): this job must not exist.
            conn.execute(delete(jobs).where(jobs.c.id == job_id))
            return holder, False
        return job_id, True

    def _take_key(
        self,
        conn: Connection,
        kind: str,
        key: str,
        job_id: int,
        now: datetime,
        expires_at: datetime | None,
    ) -> int:
        """Give (kind, key) to ``job_id`` unless another job holds it live; return the holder.

        A key is live until it has expired *and* its job is final (or pruned). The takeover
        is one conditional upsert, so two racing writers cannot both win it.
        """
        key_values = {
            "job_id": job_id,
            "created_at": now,
            "expires_at": expires_at or now,
            "final_state": None,
            "result": None,
        }
        unfinished = (
            select(jobs.c.id)
            .where(jobs.c.id == idempotency_keys.c.job_id, jobs.c.finished_at.is_(None))
            .exists()
        )
        stmt = (
            self._insert(idempotency_keys)
            .values(kind=kind, key=key, **key_values)
            .on_conflict_do_update(
                index_elements=["kind", "key"],
                set_=key_values,
                where=or_(
                    idempotency_keys.c.job_id == job_id,
                    and_(idempotency_keys.c.expires_at <= now, ~unfinished),
                ),
            )
            .returning(idempotency_keys.c.job_id)
        )
        taken = conn.execute(stmt).scalar()
        if taken is not None:
            return int(taken)
        holder = conn.execute(
            select(idempotency_keys.c.job_id).where(
                idempotency_keys.c.kind == kind, idempotency_keys.c.key == key
            )
        ).scalar_one()
        return int(holder)

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
                    self._lock_key(conn, kind, key)
                    holder = self._take_key(conn, kind, key, move.job_id, move.event.at, expires_at)
                    if holder != move.job_id:
                        return holder
                if not self._apply_moves(conn, [move])[0]:
                    raise _Undo  # the key stays with whoever held it
                return move.job_id
        except _Undo:
            return 0

    def _live_key(self, conn: Connection, job: NewJob) -> int | None:
        """The job id holding (kind, key), unless the key expired and its job is final."""
        stmt = (
            select(
                idempotency_keys.c.job_id,
                idempotency_keys.c.expires_at,
                jobs.c.id.label("present"),
                jobs.c.finished_at,
            )
            .select_from(idempotency_keys.outerjoin(jobs, jobs.c.id == idempotency_keys.c.job_id))
            .where(
                idempotency_keys.c.kind == job.kind, idempotency_keys.c.key == job.idempotency_key
            )
        )
        if self.dialect == "postgresql":
            stmt = stmt.with_for_update(of=idempotency_keys)
        row = conn.execute(stmt).first()
        if row is None:
            return None
        finished = row.present is None or row.finished_at is not None
        if finished and row.expires_at <= job.created_at:
            return None  # expired, and its job can no longer run: the key may be reused
        return int(row.job_id)

    def job_get(self, job_id: int) -> Row[Any] | None:
        with self.read() as conn:
            return conn.execute(select(jobs).where(jobs.c.id == job_id)).first()

    def job_events(self, job_id: int) -> list[Row[Any]]:
        with self.read() as conn:
            return list(
                conn.execute(
                    select(job_events)
                    .where(job_events.c.job_id == job_id)
                    .order_by(job_events.c.id)
                )
            )

    def job_list(
        self, *, state: str | None = None, kind: str | None = None, limit: int = 100
    ) -> list[Row[Any]]:
        stmt = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if state is not None:
            stmt = stmt.where(jobs.c.state == state)
        if kind is not None:
            stmt = stmt.where(jobs.c.kind == kind)
        with self.read() as conn:
            return list(conn.execute(stmt))

    def job_count_by_state(self) -> dict[str, int]:
        stmt = select(jobs.c.state, func.count()).group_by(jobs.c.state)
        with self.read() as conn:
            return {row[0]: int(row[1]) for row in conn.execute(stmt)}

    def chart_state_figures(self, chart: str) -> dict[str, tuple[int, datetime]]:
        """Per state of ``chart``: how many jobs are in it, and the oldest's last change."""
        stmt = (
            select(jobs.c.state, func.count(), func.min(jobs.c.updated_at))
            .where(jobs.c.chart == chart)
            .group_by(jobs.c.state)
        )
        with self.read() as conn:
            return {row[0]: (int(row[1]), as_utc(_utc_value(row[2]))) for row in conn.execute(stmt)}

    def chart_edge_counts(self, chart: str, since: datetime) -> dict[tuple[str, str, str], int]:
        """Transitions of ``chart``'s jobs taken since ``since``: (trigger, from, to) -> n."""
        stmt = (
            select(
                job_events.c.trigger, job_events.c.from_state, job_events.c.to_state, func.count()
            )
            .select_from(job_events.join(jobs, jobs.c.id == job_events.c.job_id))
            .where(
                jobs.c.chart == chart,
                job_events.c.at >= since,
                job_events.c.from_state.is_not(None),
            )
            .group_by(job_events.c.trigger, job_events.c.from_state, job_events.c.to_state)
        )
        with self.read() as conn:
            return {(r[0], r[1], r[2]): int(r[3]) for r in conn.execute(stmt)}

    def job_next_due(self, kinds: Sequence[str]) -> datetime | None:
        """The earliest due_at among jobs waiting to be claimed, or None."""
        stmt = select(func.min(jobs.c.due_at)).where(
            jobs.c.due_at.is_not(None), jobs.c.kind.in_(list(kinds))
        )
        with self.read() as conn:
            value = conn.execute(stmt).scalar()
        if value is None:
            return None
        return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)

    def job_count_unfinished(self, kinds: Sequence[str]) -> int:
        """Jobs of ``kinds`` not yet final (waiting or holding a lease)."""
        stmt = select(func.count()).where(
            jobs.c.kind.in_(list(kinds)), jobs.c.finished_at.is_(None)
        )
        with self.read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def db_now(self) -> datetime:
        """The database server's current time (PostgreSQL ``clock_timestamp()``)."""
        if self.dialect == "sqlite":
            now = func.strftime("%Y-%m-%d %H:%M:%f", "now")
        else:
            now = func.clock_timestamp()
        with self.read() as conn:  # never the write lock
            value = conn.execute(select(now)).scalar_one()
        return as_utc(datetime.fromisoformat(value) if isinstance(value, str) else value)

    def job_count_active(
        self, kinds: Sequence[str], now: datetime, queues: Sequence[str] | None = None
    ) -> int:
        """Unfinished jobs of ``kinds`` (and ``queues``) that are due now or held by a worker."""
        stmt = select(func.count()).where(
            jobs.c.kind.in_(list(kinds)),
            jobs.c.finished_at.is_(None),
            or_(jobs.c.due_at.is_(None), jobs.c.due_at <= now),
            *([] if queues is None else [jobs.c.queue.in_(list(queues))]),
        )
        with self.read() as conn:
            return int(conn.execute(stmt).scalar_one())

    def job_claim_due(
        self,
        *,
        now: datetime,
        limit: int,
        kinds: Sequence[str],
        states: Sequence[str],
        plan: Callable[[Row[Any], datetime | None], Move | None],
        queues: Sequence[str] | None = None,
    ) -> list[tuple[Row[Any], Move]]:
        """Claim up to ``limit`` due jobs (priority, then due_at) in one transaction.

        ``plan`` turns each selected row into its move (the chart's claim transition);
        the moves are applied and their events appended before the transaction commits.
        ``queues``: only jobs of these queues (None: every queue).
        """
        if limit <= 0 or not kinds or (queues is not None and not queues):
            return []
        return self._select_and_apply(self.claim_query(now, limit, kinds, states, queues), plan)

    def claim_query(
        self,
        now: datetime,
        limit: int,
        kinds: Sequence[str],
        states: Sequence[str],
        queues: Sequence[str] | None = None,
    ) -> Any:
        """The select of a claim (exposed so tests can check its plan)."""
        # Walk the claim index in (priority, due_at) order and stop after ``limit`` rows,
        # however many finished jobs the table holds. SQLite would rather use the kind or
        # state index (it has no statistics), so there those terms are made unindexable.
        kind: ColumnElement[str] = jobs.c.kind
        state: ColumnElement[str] = jobs.c.state
        if self.dialect == "sqlite":
            kind, state = kind.concat(""), state.concat("")
        return (
            select(jobs)
            .where(
                jobs.c.due_at.is_not(None),
                jobs.c.due_at <= now,
                kind.in_(list(kinds)),
                state.in_(list(states)),
                *([] if queues is None else [jobs.c.queue.in_(list(queues))]),
            )
            .order_by(jobs.c.priority.desc(), jobs.c.due_at, jobs.c.id)
            .limit(limit)
        )

    def job_rescue_expired(
        self,
        *,
        now: datetime,
        limit: int,
        kinds: Sequence[str],
        plan: Callable[[Row[Any], datetime | None], Move | None],
        exclude: Sequence[int] = (),
    ) -> list[tuple[Row[Any], Move]]:
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
        return self._select_and_apply(stmt, plan)

    def _select_and_apply(
        self, stmt: Any, plan: Callable[[Row[Any], datetime | None], Move | None]
    ) -> list[tuple[Row[Any], Move]]:
        """Select rows (locked), plan a move for each, apply the moves: one transaction.

        ``plan`` also gets the database's time read once the rows are locked (PostgreSQL;
        None on SQLite, whose write lock is taken before the select), on the same connection.
        """
        tx_time = None
        if self.dialect == "postgresql":
            stmt = stmt.with_for_update(skip_locked=True)
        with self.write() as conn:
            rows = list(conn.execute(stmt))
            if rows and self.dialect == "postgresql":
                tx_time = as_utc(conn.execute(select(func.clock_timestamp())).scalar_one())
            planned = [(row, move) for row in rows if (move := plan(row, tx_time)) is not None]
            applied = self._apply_moves(conn, [move for _, move in planned])
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

    def job_waiting_by_kind(self, now: datetime) -> dict[str, int]:
        """Due jobs per kind (to report kinds that no running worker handles)."""
        stmt = (
            select(jobs.c.kind, func.count())
            .where(jobs.c.due_at.is_not(None), jobs.c.due_at <= now)
            .group_by(jobs.c.kind)
        )
        with self.read() as conn:
            return {row[0]: int(row[1]) for row in conn.execute(stmt)}

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

    def key_get(self, kind: str, key: str) -> Row[Any] | None:
        """The dedupe row of (kind, key): job id, expiry, and final state once pruned."""
        stmt = select(idempotency_keys).where(
            idempotency_keys.c.kind == kind, idempotency_keys.c.key == key
        )
        with self.read() as conn:
            return conn.execute(stmt).first()

    def job_transition_many(self, moves: Sequence[Move]) -> list[bool]:
        """Apply each move as a compare-and-set; return which applied (all in one transaction)."""
        if not moves:
            return []
        with self.write() as conn:
            applied = self._apply_moves(conn, moves)
            if self.dialect == "postgresql" and any(
                ok and move.values.get("due_at") is not None
                for move, ok in zip(moves, applied, strict=True)
            ):
                notify(conn, "due")  # a retry, a release or a requeue may be due now
            return applied

    def _apply_moves(self, conn: Connection, moves: Sequence[Move]) -> list[bool]:
        applied = [False] * len(moves)
        groups: dict[tuple[bool, tuple[str, ...]], list[int]] = {}
        for index, move in enumerate(moves):
            key = (move.unless_cancelled, tuple(sorted(move.values)))
            groups.setdefault(key, []).append(index)
        for (unless_cancelled, columns), indexes in groups.items():
            stmt = _cas_update(columns, unless_cancelled)
            params = [_cas_params(moves[i]) for i in indexes]
            if self._sane_multi_rowcount and len(params) > 1:
                savepoint = conn.begin_nested()
                if conn.execute(stmt, params).rowcount == len(params):
                    savepoint.commit()
                    for i in indexes:
                        applied[i] = True
                    continue
                # Some compare-and-set lost: undo the batch and learn which, row by row.
                savepoint.rollback()
            for i, param in zip(indexes, params, strict=True):
                applied[i] = conn.execute(stmt, param).rowcount == 1
        events = [
            _event_params(m.job_id, m.event) for m, ok in zip(moves, applied, strict=True) if ok
        ]
        if events:
            conn.execute(insert(job_events), events)
        return applied

    def job_request_cancel(self, move_from: Row[Any], now: datetime) -> bool:
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

    def job_clear_cancel(self, job_id: int) -> None:
        """Drop a cancel request that the job's state cannot honour (it is moot)."""
        with self.write() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(cancel_requested_at=None))

    def job_cancel_requested(self, job_id: int) -> bool:
        stmt = select(jobs.c.cancel_requested_at).where(jobs.c.id == job_id)
        with self.read() as conn:
            return conn.execute(stmt).scalar_one_or_none() is not None

    def job_get_many(self, job_ids: Iterable[int]) -> dict[int, Row[Any]]:
        ids = list(job_ids)
        if not ids:
            return {}
        with self.read() as conn:
            return {int(r.id): r for r in conn.execute(select(jobs).where(jobs.c.id.in_(ids)))}

    # -- steps ---------------------------------------------------------------------------

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
            stmt = self._insert(job_steps).values(
                job_id=job_id, name=name, result=result, attempt=attempt, recorded_at=at
            )
            conn.execute(stmt.on_conflict_do_nothing(index_elements=["job_id", "name"]))
            return True

    # -- helpers -------------------------------------------------------------------------

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)


def _utc_value(value: Any) -> datetime:
    """An aggregate's datetime: SQLite returns the stored text (func.min loses the type)."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


class _Undo(Exception):
    """Roll back the current write transaction and report that nothing applied."""


def _cas_update(columns: tuple[str, ...], unless_cancelled: bool = False) -> Any:
    conditions = [
        jobs.c.id == bindparam("b_id"),
        jobs.c.state == bindparam("b_state"),
        jobs.c.version == bindparam("b_version"),
        jobs.c.lease_token.is_not_distinct_from(bindparam("b_lease")),
    ]
    if unless_cancelled:
        conditions.append(jobs.c.cancel_requested_at.is_(None))
    values: dict[str, Any] = {c: bindparam(f"v_{c}") for c in columns}
    values["version"] = jobs.c.version + 1
    return update(jobs).where(and_(*conditions)).values(values)


def _cas_params(move: Move) -> dict[str, Any]:
    params = {f"v_{k}": v for k, v in move.values.items()}
    params.update(
        b_id=move.job_id, b_state=move.from_state, b_version=move.version, b_lease=move.lease_token
    )
    return params


def _event_params(job_id: int, row: EventRow) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "trigger": row.trigger,
        "from_state": row.from_state,
        "to_state": row.to_state,
        "attempt": row.attempt,
        "at": row.at,
        "worker": row.worker,
        "detail": row.detail,
    }


def _make_engine(
    url: str,
    busy_timeout: float,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout: float = 30.0,
) -> SAEngine:
    serializer = partial(json.dumps, allow_nan=False, separators=(",", ":"))
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        kwargs: dict[str, Any] = {"json_serializer": serializer}
        if memory:
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        db = create_engine(url, **kwargs)
        _configure_sqlite(db, memory, int(busy_timeout * 1000))
        return db
    # pool_pre_ping: a connection broken by a server restart is replaced, not used.
    return create_engine(
        url,
        json_serializer=serializer,
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
    )


def _set_wal(cursor: Any, patience: float) -> None:
    """Switch to WAL. SQLite answers "locked" at once, without calling the busy handler,
    while another connection is switching a new file: wait and try again."""
    import sqlite3

    deadline = time.monotonic() + patience
    pause = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.2)


def _configure_sqlite(db: SAEngine, memory: bool, busy_timeout_ms: int) -> None:
    """WAL + synchronous=FULL: a committed enqueue survives a crash or power loss."""

    @event.listens_for(db, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (below)
        cursor = dbapi_conn.cursor()
        # The busy timeout first: switching a new file to WAL takes a lock that another
        # process opening it at the same moment may hold.
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms}")
        if not memory:
            _set_wal(cursor, busy_timeout_ms / 1000)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(db, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")
