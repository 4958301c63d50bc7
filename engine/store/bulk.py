"""The SQL of listing and of bulk operator actions (``engine.bulk``): jobs matching a
filter, a page at a time by id (keyset pagination, never OFFSET), their counts, and a
batch of operator writes in one transaction.

Plain functions over a ``Database`` (the ``Store``): listing and bulk actions read a page,
plan it outside any transaction, and write it in a short one, so a million-job requeue
neither holds a lock for long nor loads the table into memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Connection, and_, func, or_, select, text, update
from sqlalchemy.exc import DBAPIError

from engine.store import keys
from engine.store.cas import apply_moves
from engine.store.database import Database
from engine.store.reads import job_row
from engine.store.rows import JobRow, Move, parse_time
from engine.store.schema import idempotency_keys, jobs
from engine.store.wakeup import notify

KEY_CHUNK = 1000  # keys per upsert (SQLite binds at most 32766 values per statement)
RETRYABLE = {"40P01", "40001"}  # PostgreSQL: deadlock detected, serialization failure
WRITE_TRIES = 3


@dataclass(frozen=True)
class JobFilter:
    """Which jobs: by id, or by any of state, kind, queue, quarantine reason (each a set:
    a job matches one of its values) and when the job last changed (``updated_at`` in
    [``updated_since``, ``updated_before``)). Empty fields do not filter; ids are given
    alone (with ids, nothing else filters)."""

    ids: tuple[int, ...] = ()
    states: tuple[str, ...] = ()
    kinds: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    updated_since: datetime | None = None
    updated_before: datetime | None = None

    def __post_init__(self) -> None:
        for name in ("ids", "states", "kinds", "queues", "reasons"):
            value = getattr(self, name)
            if isinstance(value, str | int):
                raise TypeError(f"JobFilter.{name} is a tuple of values, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        if self.ids and self.narrowed:
            raise ValueError("a JobFilter takes ids alone, or filters without ids")
        for name in ("updated_since", "updated_before"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"JobFilter.{name} must be timezone-aware, got {value!r}")

    @property
    def narrowed(self) -> bool:
        """Whether any field besides ids filters."""
        return bool(
            self.states
            or self.kinds
            or self.queues
            or self.reasons
            or self.updated_since is not None
            or self.updated_before is not None
        )

    @property
    def empty(self) -> bool:
        return not self.ids and not self.narrowed

    def describe(self) -> str:
        """``state=quarantined kind=ship,pay`` (recorded in a bulk action's events)."""
        parts = [
            f"{name}={','.join(str(v) for v in values)}"
            for name, values in (
                ("id", self.ids),
                ("state", self.states),
                ("kind", self.kinds),
                ("queue", self.queues),
                ("reason", self.reasons),
            )
            if values
        ]
        if self.updated_since is not None:
            parts.append(f"updated>={self.updated_since.isoformat()}")
        if self.updated_before is not None:
            parts.append(f"updated<{self.updated_before.isoformat()}")
        return " ".join(parts) or "all"


def where(f: JobFilter) -> list[ColumnElement[bool]]:
    """The filter's conditions on ``jobs``."""
    conditions: list[ColumnElement[bool]] = []
    if f.ids:
        conditions.append(jobs.c.id.in_(list(f.ids)))
    for column, values in (
        (jobs.c.state, f.states),
        (jobs.c.kind, f.kinds),
        (jobs.c.queue, f.queues),
        (jobs.c.quarantine_reason, f.reasons),
    ):
        if values:
            conditions.append(column.in_(list(values)))
    if f.updated_since is not None:
        conditions.append(jobs.c.updated_at >= f.updated_since)
    if f.updated_before is not None:
        conditions.append(jobs.c.updated_at < f.updated_before)
    return conditions


# -- reads ---------------------------------------------------------------------------------


CLOCK_SLACK = timedelta(hours=1)  # how far creation times may run out of id order


def unindexed(f: JobFilter) -> bool:
    """Whether ``f`` filters on columns no index holds (queue, quarantine reason, changed
    since): a page of a rare match could read the whole table."""
    return bool(f.queues or f.reasons or f.updated_since is not None) and not f.ids


def job_page(
    db: Database,
    f: JobFilter,
    *,
    limit: int,
    below: int | None = None,
    above: int | None = None,
) -> list[JobRow]:
    """Up to ``limit`` jobs matching ``f``, newest (highest id) first, with ids below
    ``below`` (the previous page's last id) and above ``above`` when given."""
    bounds = [jobs.c.id < below] if below is not None else []
    if above is not None:
        bounds.append(jobs.c.id > above)
    if f.updated_before is not None and not f.ids:
        # Unchanged since T means created before T: start from the ids created by then
        # rather than walk every newer job (a week of them, for "older than 6 days").
        bounds.append(jobs.c.id <= _last_id_created_before(db, f.updated_before + CLOCK_SLACK))
    return _partitioned(db, f, bounds, limit, newest_first=True)


def _last_id_created_before(db: Database, when: datetime) -> int:
    """The highest id created before ``when``, by a binary search of the primary key
    (ids grow with creation time; ``CLOCK_SLACK`` covers clocks out of step). Every
    job created before ``when`` - slack has an id at or below it."""
    probe = select(jobs.c.id, jobs.c.created_at).order_by(jobs.c.id).limit(1)
    with db.read() as conn:
        top = int(conn.execute(select(func.max(jobs.c.id))).scalar() or 0)
        low, high = 0, top  # invariant: some id <= low was created before when (or low 0)
        while low < high:
            middle = (low + high + 1) // 2
            row = conn.execute(probe.where(jobs.c.id >= middle)).first()
            if row is not None and parse_time(row[1]) < when:
                low = max(middle, int(row[0]))
            else:
                high = middle - 1
    return low


def job_scan(
    db: Database,
    f: JobFilter,
    *,
    limit: int,
    above: int = 0,
    upto: int | None = None,
    ids: Sequence[int] | None = None,
) -> list[JobRow]:
    """Up to ``limit`` jobs matching ``f`` in id order: ids above ``above`` and at most
    ``upto``, and among ``ids`` when given (a bulk action's batches and re-reads)."""
    bounds = [jobs.c.id > above]
    if upto is not None:
        bounds.append(jobs.c.id <= upto)
    if ids is not None:
        bounds.append(jobs.c.id.in_(list(ids)))
        return _select(db, [*where(f), *bounds], limit, newest_first=False)
    return _partitioned(db, f, bounds, limit, newest_first=False)


def _partitioned(
    db: Database,
    f: JobFilter,
    bounds: list[ColumnElement[bool]],
    limit: int,
    *,
    newest_first: bool,
) -> list[JobRow]:
    """The first ``limit`` jobs matching ``f`` in id order, read partition by partition:
    one select per (state, kind) (``ix_jobs_state``: state, kind, id; the states or kinds
    not named are those present), each already in id order and stopping at ``limit``,
    merged here. One select over both columns would make the database read every matching
    row and sort them (a million, for ``state=succeeded``)."""
    if f.ids or not (f.states or f.kinds):
        return _select(db, [*where(f), *bounds], limit, newest_first=newest_first)
    rest = replace(f, states=(), kinds=())
    states = f.states or tuple(sorted(job_states_present(db)))
    kinds = f.kinds or tuple(sorted(job_kinds_present(db)))
    parts = [[jobs.c.state == s, jobs.c.kind == k] for s in states for k in kinds]
    found: dict[int, JobRow] = {}
    order = jobs.c.id.desc() if newest_first else jobs.c.id
    with db.read() as conn:  # (SQLite: one snapshot) a job shows once, whatever moved
        for part in parts:
            stmt = select(jobs).where(*part, *where(rest), *bounds).order_by(order).limit(limit)
            for row in conn.execute(stmt):
                found.setdefault(int(row.id), job_row(row))
    return sorted(found.values(), key=lambda row: row.id, reverse=newest_first)[:limit]


def _select(
    db: Database, conditions: list[ColumnElement[bool]], limit: int, *, newest_first: bool
) -> list[JobRow]:
    order = jobs.c.id.desc() if newest_first else jobs.c.id
    stmt = select(jobs).where(*conditions).order_by(order).limit(limit)
    with db.read() as conn:
        return [job_row(row) for row in conn.execute(stmt)]


def job_count_states(
    db: Database, f: JobFilter, *, cap: int | None = None, above: int = 0
) -> dict[str, int]:
    """How many jobs match ``f`` (with ids above ``above``), per state; with ``cap``, at
    most ``cap`` + 1 of them are counted (a dry run at a million jobs need not count them
    all)."""
    conditions = [*where(f), *([jobs.c.id > above] if above else [])]
    if cap is None:
        stmt = select(jobs.c.state, func.count()).where(*conditions).group_by(jobs.c.state)
    else:
        some = select(jobs.c.state).where(*conditions).limit(cap + 1).subquery()
        stmt = select(some.c.state, func.count()).group_by(some.c.state)
    with db.read() as conn:
        return {row[0]: int(row[1]) for row in conn.execute(stmt)}


def _skip_scan(column: str) -> Any:
    """The distinct values of an index's first column, one index probe each (each step
    seeks the next value above the last), not a read of every row."""
    return text(
        f"""
        WITH RECURSIVE present(v) AS (
            SELECT min({column}) FROM jobs
            UNION ALL
            SELECT (SELECT min(j.{column}) FROM jobs j WHERE j.{column} > present.v)
            FROM present WHERE present.v IS NOT NULL
        )
        SELECT v FROM present WHERE v IS NOT NULL
        """  # noqa: S608 (the column is one of two names of ours, never input)
    )


_STATES = _skip_scan("state")  # ix_jobs_state
_KINDS = _skip_scan("kind")  # ix_jobs_kind_key


def job_states_present(db: Database) -> set[str]:
    """The states some job is in (a skip scan of ``ix_jobs_state``)."""
    with db.read() as conn:
        return {row[0] for row in conn.execute(_STATES)}


def job_kinds_present(db: Database) -> set[str]:
    """The kinds some job is of (a skip scan of ``ix_jobs_kind_key``)."""
    with db.read() as conn:
        return {row[0] for row in conn.execute(_KINDS)}


def job_max_id(db: Database) -> int:
    """The highest job id so far (0 when there are none): where a bulk scan stops, so
    jobs created while it runs are left alone."""
    with db.read() as conn:
        return int(conn.execute(select(func.max(jobs.c.id))).scalar() or 0)


# -- the batch write -------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatorWrite:
    """One job's operator write, applied only while the job is still as ``row`` read it
    (id, state, version, lease token): the compare-and-set ``move`` with its event, or
    (``move`` None) a request that the handler holding it stop (``cancel_requested_at``
    = ``at``). A requeue of a keyed job takes ``key`` back first, live until
    ``key_expires_at``, as ``Store.job_requeue`` does."""

    row: JobRow
    at: datetime
    move: Move | None = None
    key: str | None = None
    key_expires_at: datetime | None = None
    by: str | None = None  # a cancel request: who asked


class _Undo(Exception):
    """Roll the batch back: a keyed move failed after its key was taken."""


def job_operator_writes(db: Database, writes: Sequence[OperatorWrite]) -> list[int]:
    """Apply a batch of operator writes in one transaction; return, per write, the job's
    id when it applied, 0 when the job changed since it was read (nothing written), or
    the id of another job that holds the dedupe key a requeue needs (nothing written).

    The jobs are locked first (PostgreSQL: ``FOR UPDATE`` in id order; SQLite's write
    transaction is the only writer) and compared with what was read. A keyed requeue then
    takes its key and moves at once, one after another (two jobs of one key in one batch:
    the first one takes it, the second finds it live); the other moves are applied
    together. Deadlocks and serialization failures (PostgreSQL) retry the batch.
    """
    if not writes:
        return []
    for attempt in range(WRITE_TRIES):
        try:
            with db.write() as conn:
                return _write(conn, db.dialect, writes)
        except _Undo:
            return [0] * len(writes)  # cannot happen under the locks; all "changed", re-read
        except DBAPIError as error:
            code = getattr(error.orig, "sqlstate", None)
            if code not in RETRYABLE or attempt == WRITE_TRIES - 1:
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _write(conn: Connection, dialect: str, writes: Sequence[OperatorWrite]) -> list[int]:
    ids = sorted({w.row.id for w in writes})
    current_stmt = (
        select(jobs.c.id, jobs.c.state, jobs.c.version, jobs.c.lease_token)
        .where(jobs.c.id.in_(ids))
        .order_by(jobs.c.id)
    )
    if dialect == "postgresql":
        current_stmt = current_stmt.with_for_update()
    current = {int(r[0]): (r[1], int(r[2]), r[3]) for r in conn.execute(current_stmt)}
    results = [0] * len(writes)
    keyed: list[int] = []
    plain: list[int] = []
    requests: list[int] = []
    for index, w in enumerate(writes):
        if current.get(w.row.id) != (w.row.state, w.row.version, w.row.lease_token):
            continue  # changed since it was read: 0
        if w.move is None:
            requests.append(index)
        elif w.key is not None:
            keyed.append(index)
        else:
            plain.append(index)
    due = _take_keys_and_move(conn, dialect, writes, keyed, results)
    moves = [writes[i].move for i in plain]
    applied = apply_moves(conn, [m for m in moves if m is not None], dialect)
    for index, ok in zip(plain, applied, strict=True):
        if ok:
            results[index] = writes[index].row.id
            due = due or _sets_due(writes[index].move)
    for index in requests:
        w = writes[index]
        stmt = (
            update(jobs)
            .where(
                jobs.c.id == w.row.id,
                jobs.c.state == w.row.state,
                jobs.c.version == w.row.version,
                jobs.c.lease_token == w.row.lease_token,
            )
            .values(cancel_requested_at=w.at, cancel_requested_by=w.by)
        )
        if conn.execute(stmt).rowcount == 1:
            results[index] = w.row.id
    if due and dialect == "postgresql":
        notify(conn, "due")  # requeued jobs are due now: wake idle workers
    return results


def _take_keys_and_move(
    conn: Connection,
    dialect: str,
    writes: Sequence[OperatorWrite],
    keyed: list[int],
    results: list[int],
) -> bool:
    """Keyed requeues: each job takes its dedupe key back (as ``keys.take_key``: unless
    another job holds it live), then moves. Distinct keys are taken in one statement per
    chunk; a key that two jobs of the batch share is taken by the first (in id order),
    whose move is applied first, then tried for the next one (which finds it live).
    Returns whether a job that moved is due (to wake workers)."""
    if not keyed:
        return False
    first: dict[tuple[str, str], int] = {}
    later: list[int] = []
    for index in sorted(keyed, key=lambda i: writes[i].row.id):
        pair = (writes[index].row.kind, str(writes[index].key))
        if pair in first:
            later.append(index)
        else:
            first[pair] = index
    if dialect == "postgresql":  # as keys.lock_key, all at once, in a fixed order
        conn.execute(
            text(
                "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
                " FROM unnest(CAST(:pairs AS text[])) AS k"
            ),
            {"pairs": sorted(f"{kind}\x1f{key}" for kind, key in first)},
        )
    firsts = list(first.values())
    taken: set[tuple[str, str, int]] = set()
    for start in range(0, len(firsts), KEY_CHUNK):
        taken |= _take_many(conn, dialect, [writes[i] for i in firsts[start : start + KEY_CHUNK]])
    moving: list[int] = []
    for index in firsts:
        w = writes[index]
        if (w.row.kind, w.key, w.row.id) in taken:
            moving.append(index)
        else:
            results[index] = _holder(conn, w.row.kind, str(w.key))
    due = _move_all(conn, dialect, writes, moving, results)
    for index in later:
        w = writes[index]
        assert w.move is not None and w.key is not None
        holder = keys.take_key(
            conn, dialect, w.row.kind, w.key, w.row.id, w.move.event.at, w.key_expires_at
        )
        if holder != w.row.id:
            results[index] = holder
            continue
        due = _move_all(conn, dialect, writes, [index], results) or due
    return due


def _take_many(
    conn: Connection, dialect: str, writes: Sequence[OperatorWrite]
) -> set[tuple[str, str, int]]:
    """One upsert giving each write's (distinct) key to its job unless another job holds
    it live (the rule of ``keys.take_key``); returns the (kind, key, job) taken."""
    insert = keys.dialect_insert(dialect, idempotency_keys)
    rows = []
    for w in writes:
        assert w.move is not None
        at = w.move.event.at
        rows.append(
            {
                "kind": w.row.kind,
                "key": w.key,
                "job_id": w.row.id,
                "created_at": at,
                "expires_at": w.key_expires_at or at,
                "final_state": None,
                "result": None,
            }
        )
    stmt = insert.values(rows)
    unfinished = (
        select(jobs.c.id)
        .where(jobs.c.id == idempotency_keys.c.job_id, jobs.c.finished_at.is_(None))
        .exists()
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["kind", "key"],
        set_={
            "job_id": stmt.excluded.job_id,
            "created_at": stmt.excluded.created_at,
            "expires_at": stmt.excluded.expires_at,
            "final_state": None,
            "result": None,
        },
        where=or_(
            idempotency_keys.c.job_id == stmt.excluded.job_id,
            and_(idempotency_keys.c.expires_at <= stmt.excluded.created_at, ~unfinished),
        ),
    ).returning(idempotency_keys.c.kind, idempotency_keys.c.key, idempotency_keys.c.job_id)
    return {(r[0], r[1], int(r[2])) for r in conn.execute(stmt)}


def _holder(conn: Connection, kind: str, key: str) -> int:
    stmt = select(idempotency_keys.c.job_id).where(
        idempotency_keys.c.kind == kind, idempotency_keys.c.key == key
    )
    return int(conn.execute(stmt).scalar_one())


def _move_all(
    conn: Connection,
    dialect: str,
    writes: Sequence[OperatorWrite],
    indexes: list[int],
    results: list[int],
) -> bool:
    """Apply the moves of keyed writes whose keys were taken; all must apply (the jobs
    are locked and were checked), else the batch is undone: a key must not stay with a
    job that did not move. Returns whether one of them is due."""
    moves = [writes[i].move for i in indexes]
    applied = apply_moves(conn, [m for m in moves if m is not None], dialect)
    if len(applied) != len(indexes) or not all(applied):
        raise _Undo
    for index in indexes:
        results[index] = writes[index].row.id
    return any(_sets_due(m) for m in moves)


def _sets_due(move: Any) -> bool:
    return move is not None and move.values.get("due_at") is not None
