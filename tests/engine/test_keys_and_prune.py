"""Dedupe keys that outlive job rows, pruning, transactional enqueue and the prune CLI.

All on real SQLite files with a frozen clock. Several tests are regressions for bugs found
while writing them: a pruned job's id reused, a kept job's key dropped by prune, a requeue
that let two unfinished jobs share a key, racing transactional enqueues of one key, the
store's first use inside a caller's transaction, and non-finite ages.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import structlog
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy.orm import Session

from engine import (
    Engine,
    FrozenClock,
    JobchartsError,
    JobNotFound,
    Permanent,
    RetryPolicy,
)
from engine.cli import cli, parse_age
from engine.store.schema import idempotency_keys, job_events, job_steps, jobs

KIND = "task"
DAY = 86_400.0
# Failures wait an hour before their retry, so a job can sit in retry_wait past its key's TTL.
SLOW_RETRY = RetryPolicy(max_attempts=3, base=3600.0, factor=1.0, cap=3600.0, jitter=0.0)


class Task(BaseModel):
    n: int
    mode: str = "ok"  # ok | permanent | flaky


def register(
    engine: Engine,
    calls: list[int] | None = None,
    *,
    ttl: float | timedelta = timedelta(days=7),
    kind: str = KIND,
) -> str:
    """Register a keyed kind ("task:<n>") whose handler records a step and returns {"n": n}."""

    def handler(ctx: Any, p: Task) -> dict[str, int]:
        if calls is not None:
            calls.append(p.n)
        ctx.step("send", lambda: {"sent": p.n})
        if p.mode == "permanent":
            raise Permanent("rejected for good")
        if p.mode == "flaky":
            raise ConnectionError("try later")
        return {"n": p.n}

    engine.job(
        payload=Task,
        idempotency=lambda p: f"task:{p.n}",
        retry=SLOW_RETRY,
        kind=kind,
        idempotency_ttl=ttl,
    )(handler)
    return kind


def count(engine: Engine, table: sa.Table, **where: Any) -> int:
    """Rows of ``table`` matching ``column=value`` filters, read through the engine's store."""
    stmt = sa.select(sa.func.count()).select_from(table)
    for column, value in where.items():
        stmt = stmt.where(table.c[column] == value)
    with engine.store.read() as conn:
        return int(conn.execute(stmt).scalar_one())


def unfinished_by_key(engine: Engine) -> dict[str, list[int]]:
    """Ids of unfinished jobs per idempotency key."""
    stmt = sa.select(jobs.c.idempotency_key, jobs.c.id).where(jobs.c.finished_at.is_(None))
    found: dict[str, list[int]] = {}
    with engine.store.read() as conn:
        for key, job_id in conn.execute(stmt):
            found.setdefault(key, []).append(int(job_id))
    return found


# -- 1. keys outlive pruned job rows -----------------------------------------------------------


def test_pruned_job_keeps_its_key_result_and_id_until_the_ttl(
    engine: Engine, clock: FrozenClock
) -> None:
    """A pruned job's rows are gone but its key still dedupes to its id, state and result."""
    calls: list[int] = []
    register(engine, calls, ttl=timedelta(days=2))
    job_id = engine.enqueue(KIND, {"n": 1})
    engine.run_until_idle()
    assert engine.get(job_id).result == {"n": 1}
    assert count(engine, job_events, job_id=job_id) == 3
    assert count(engine, job_steps, job_id=job_id) == 1

    clock.advance(1.5 * DAY)
    assert engine.prune(timedelta(days=1)) == (1, 0)

    with pytest.raises(JobNotFound):
        engine.get(job_id)
    assert count(engine, jobs) == 0
    assert count(engine, job_events, job_id=job_id) == 0
    assert count(engine, job_steps, job_id=job_id) == 0

    assert engine.enqueue(KIND, {"n": 1}) == job_id, "the key still names the original job"
    assert count(engine, jobs) == 0 and count(engine, job_events) == 0, "nothing new stored"
    engine.run_until_idle()
    assert calls == [1], "the work was not done twice"
    assert engine.key_holder(KIND, "task:1") == job_id
    key = engine.store.key_get(KIND, "task:1")
    assert key is not None
    assert (key.job_id, key.final_state, key.result) == (job_id, "succeeded", {"n": 1})
    assert engine.key_holder(KIND, "task:404") is None


def test_a_pruned_jobs_id_is_never_given_to_a_new_job(engine: Engine, clock: FrozenClock) -> None:
    """A new job never receives the id of a pruned job whose key is still live."""
    register(engine, ttl=timedelta(days=2))
    first = engine.enqueue(KIND, {"n": 1})
    engine.run_until_idle()
    clock.advance(1.5 * DAY)
    assert engine.prune(timedelta(days=1)) == (1, 0)

    other = engine.enqueue(KIND, {"n": 2})
    again = engine.enqueue(KIND, {"n": 1})
    assert other != first, "task:2 got the id that task:1's live key still names"
    assert engine.key_holder(KIND, "task:1") == first
    assert again == first
    with pytest.raises(JobNotFound):  # the job of task:1 was pruned: it is not task:2's job
        engine.get(again)


# -- 2. after the TTL, a final job's key is free again --------------------------------------


@pytest.mark.parametrize("ttl", [timedelta(days=2), 2 * DAY], ids=["timedelta", "seconds"])
def test_key_is_reused_once_the_ttl_passed_and_the_job_is_final(
    engine: Engine, clock: FrozenClock, ttl: float | timedelta
) -> None:
    """A finished job's key dedupes until exactly the TTL, then a new job gets it and runs."""
    calls: list[int] = []
    register(engine, calls, ttl=ttl)
    first = engine.enqueue(KIND, {"n": 1})
    engine.run_until_idle()

    clock.advance(2 * DAY - 1)
    assert engine.enqueue(KIND, {"n": 1}) == first, "one second before the TTL: still deduped"
    clock.advance(1)
    second = engine.enqueue(KIND, {"n": 1})
    assert second != first
    assert engine.key_holder(KIND, "task:1") == second
    assert engine.get(second).state == "pending" and len(engine.get(second).history) == 1
    assert engine.run_until_idle().succeeded == 1
    assert engine.get(second).state == "succeeded" and calls == [1, 1]
    assert engine.get(first).state == "succeeded", "the old job is untouched"
    assert engine.enqueue(KIND, {"n": 1}) == second, "the new job holds the key afresh"


def test_key_of_a_pruned_job_is_reused_after_its_ttl(engine: Engine, clock: FrozenClock) -> None:
    """Once the TTL passed, a pruned job's key (still stored) lets a new job in, which runs."""
    calls: list[int] = []
    register(engine, calls, ttl=timedelta(days=2))
    engine.enqueue(KIND, {"n": 1})
    engine.run_until_idle()
    clock.advance(1.5 * DAY)
    assert engine.prune(timedelta(days=1)) == (1, 0)
    clock.advance(DAY)  # the key expired but nobody pruned it yet

    assert engine.store.key_get(KIND, "task:1") is not None
    second = engine.enqueue(KIND, {"n": 1})
    assert count(engine, jobs) == 1 and engine.key_holder(KIND, "task:1") == second
    key = engine.store.key_get(KIND, "task:1")
    assert key is not None and key.final_state is None and key.result is None
    engine.run_until_idle()
    assert engine.get(second).state == "succeeded" and calls == [1, 1]


# -- 3. an unfinished job never loses its key --------------------------------------------------


@pytest.mark.parametrize("state", ["pending", "retry_wait"])
def test_expired_key_of_an_unfinished_job_still_dedupes(
    engine: Engine, clock: FrozenClock, state: str
) -> None:
    """Past its TTL, the key of a pending or retry_wait job still returns that job."""
    register(engine, ttl=60)
    if state == "pending":
        job_id = engine.enqueue(KIND, {"n": 1}, delay=10 * DAY)
    else:
        job_id = engine.enqueue(KIND, {"n": 1, "mode": "flaky"})
        engine.run_until_idle()
    assert engine.get(job_id).state == state

    clock.advance(120)  # the TTL passed; the retry (an hour away) or the delay has not
    assert engine.enqueue(KIND, {"n": 1}) == job_id
    assert engine.prune(0, include_quarantined=True) == (0, 0), "key and job both kept"
    assert engine.enqueue(KIND, {"n": 1}) == job_id
    assert count(engine, jobs) == 1 and engine.key_holder(KIND, "task:1") == job_id


def test_expired_key_of_a_running_job_still_dedupes(engine: Engine, clock: FrozenClock) -> None:
    """An enqueue made while the key's job is running, past the TTL, returns that job."""
    seen: list[tuple[int, int, str]] = []

    def handler(ctx: Any, p: Task) -> None:
        if seen:  # a second job for the key ran: record it, but do not enqueue forever
            seen.append((ctx.job_id, -1, "second job ran"))
            return
        clock.advance(120)
        seen.append(
            (ctx.job_id, engine.enqueue("runner", {"n": p.n}), engine.get(ctx.job_id).state)
        )

    engine.job(payload=Task, idempotency=lambda p: f"r:{p.n}", kind="runner", idempotency_ttl=60)(
        handler
    )
    job_id = engine.enqueue("runner", {"n": 1})
    engine.run_until_idle()
    assert seen == [(job_id, job_id, "running")]
    assert count(engine, jobs) == 1


# -- 4. what prune deletes and what it keeps ---------------------------------------------------


def test_prune_keeps_quarantined_jobs_unless_asked(engine: Engine, clock: FrozenClock) -> None:
    """Old quarantined jobs survive prune until include_quarantined=True; succeeded ones go."""
    register(engine)
    done = engine.enqueue(KIND, {"n": 1})
    stuck = engine.enqueue(KIND, {"n": 2, "mode": "permanent"})
    engine.run_until_idle()
    assert engine.get(stuck).state == "quarantined"

    clock.advance(2 * DAY)
    assert engine.prune(timedelta(days=3), include_quarantined=True) == (0, 0), "not old enough"
    assert engine.prune(DAY) == (1, 0)
    with pytest.raises(JobNotFound):
        engine.get(done)
    assert engine.get(stuck).state == "quarantined"
    assert engine.prune(DAY) == (0, 0)
    assert engine.prune(DAY, include_quarantined=True) == (1, 0)
    with pytest.raises(JobNotFound):
        engine.get(stuck)
    key = engine.store.key_get(KIND, "task:2")
    assert key is not None and key.final_state == "quarantined"


def test_prune_never_deletes_unfinished_jobs(engine: Engine, clock: FrozenClock) -> None:
    """Pending, retry_wait and running jobs survive any prune; a cancelled one is deleted."""
    register(engine)
    waiting = engine.enqueue(KIND, {"n": 1, "mode": "flaky"})
    engine.run_until_idle()
    delayed = engine.enqueue(KIND, {"n": 2}, delay=90 * DAY)
    due = engine.enqueue(KIND, {"n": 3}, priority=5)
    cancelled = engine.enqueue(KIND, {"n": 4}, delay=90 * DAY)
    engine.cancel(cancelled)
    assert [c.job_id for c in engine.claim(clock.now(), 10).jobs] == [due]

    clock.advance(30 * DAY)  # every key expired too (TTL 7 days)
    assert engine.prune(0, include_quarantined=True) == (1, 1)
    with pytest.raises(JobNotFound):
        engine.get(cancelled)
    states = {job_id: engine.get(job_id).state for job_id in (waiting, delayed, due)}
    assert states == {waiting: "retry_wait", delayed: "pending", due: "running"}
    for job_id, n in ((waiting, 1), (delayed, 2), (due, 3)):
        assert engine.key_holder(KIND, f"task:{n}") == job_id, "unfinished jobs keep their keys"
        assert count(engine, job_events, job_id=job_id) >= 1


def test_prune_deletes_expired_keys_only_of_pruned_jobs(engine: Engine, clock: FrozenClock) -> None:
    """Expired keys of pruned jobs are deleted and counted; kept jobs keep theirs."""
    register(engine, ttl=timedelta(days=1))
    done = engine.enqueue(KIND, {"n": 1})
    stuck = engine.enqueue(KIND, {"n": 2, "mode": "permanent"})
    later = engine.enqueue(KIND, {"n": 3}, delay=30 * DAY)
    engine.run_until_idle()

    clock.advance(DAY - 1)
    assert engine.prune(0) == (1, 0), "keys not expired yet: only the job goes"
    clock.advance(2)
    assert engine.prune(0) == (0, 1), "the pruned job's key only"
    assert engine.key_holder(KIND, "task:1") is None
    assert engine.key_holder(KIND, "task:2") == stuck, "a kept (quarantined) job keeps its key"
    assert engine.key_holder(KIND, "task:3") == later
    assert engine.get(stuck).state == "quarantined", "its job row is kept"
    assert count(engine, idempotency_keys) == 2
    assert engine.prune(0) == (0, 0)
    assert done not in {r.id for r in engine.store.job_list()}


def test_requeued_quarantined_job_is_not_pruned_and_keeps_its_key(
    engine: Engine, clock: FrozenClock
) -> None:
    """A quarantined job requeued after its TTL is unfinished again: not pruned, still dedupes."""
    calls: list[int] = []
    register(engine, calls)
    job_id = engine.enqueue(KIND, {"n": 1, "mode": "permanent"})
    engine.run_until_idle()
    clock.advance(10 * DAY)
    engine.requeue(job_id)

    assert engine.prune(0, include_quarantined=True) == (0, 0)
    assert engine.get(job_id).state == "pending"
    assert engine.enqueue(KIND, {"n": 1, "mode": "permanent"}) == job_id
    engine.run_until_idle()
    assert calls == [1, 1] and engine.get(job_id).state == "quarantined"


def test_requeue_after_prune_dropped_the_key_still_dedupes(
    engine: Engine, clock: FrozenClock
) -> None:
    """A requeued job whose expired key prune removed still receives enqueues of its key."""
    register(engine, ttl=timedelta(days=1))
    job_id = engine.enqueue(KIND, {"n": 1, "mode": "permanent"})
    engine.run_until_idle()
    clock.advance(2 * DAY)
    engine.prune(DAY)  # keeps the quarantined job, deletes its (expired) key
    engine.requeue(job_id)
    assert engine.get(job_id).state == "pending"
    assert engine.enqueue(KIND, {"n": 1}) == job_id
    assert unfinished_by_key(engine) == {"task:1": [job_id]}


def test_requeue_never_makes_two_unfinished_jobs_share_a_key(
    engine: Engine, clock: FrozenClock
) -> None:
    """After a newer job took over an expired key, requeueing the old job cannot duplicate it."""
    register(engine, ttl=timedelta(days=1))
    old = engine.enqueue(KIND, {"n": 1, "mode": "permanent"})
    engine.run_until_idle()
    clock.advance(2 * DAY)
    new = engine.enqueue(KIND, {"n": 1}, delay=DAY)
    assert new != old and engine.key_holder(KIND, "task:1") == new
    with contextlib.suppress(JobchartsError):  # refusing the requeue is one acceptable fix
        engine.requeue(old)
    shared = unfinished_by_key(engine)
    assert all(len(ids) <= 1 for ids in shared.values()), shared


# -- 5. transactional enqueue ------------------------------------------------------------------


meta = sa.MetaData()
orders = sa.Table(
    "orders",
    meta,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("item", sa.String(50), nullable=False),
)


@pytest.fixture
def sa_engine(engine: Engine, db_url: str) -> Iterator[sa.Engine]:
    """The caller's own SQLAlchemy engine on the jobs database, with an ``orders`` table."""
    engine.store  # noqa: B018 - opening the store creates the schema (and WAL) first
    db = sa.create_engine(db_url)
    meta.create_all(db)
    yield db
    db.dispose()


def order_count(db: sa.Engine) -> int:
    with db.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(orders)).scalar_one())


def write_order_and_job(engine: Engine, tx: sa.Connection | Session, order_id: int) -> int:
    """In the caller's open transaction: insert an order row and enqueue its job."""
    tx.execute(sa.insert(orders).values(id=order_id, item="book"))
    job_id = engine.enqueue(KIND, {"n": order_id}, connection=tx)
    with pytest.raises(JobNotFound):  # uncommitted: invisible to everyone else
        engine.get(job_id)
    return job_id


def in_transaction(engine: Engine, db: sa.Engine, use_session: bool, *, commit: bool) -> int:
    """Write an order and its job in one caller transaction (Connection or Session)."""
    if use_session:
        with Session(db) as session:
            job_id = write_order_and_job(engine, session, 7)
            if commit:
                session.commit()
            else:
                session.rollback()
    else:
        with db.connect() as conn:
            conn.begin()
            job_id = write_order_and_job(engine, conn, 7)
            if commit:
                conn.commit()
            else:
                conn.rollback()
    return job_id


@pytest.mark.parametrize("use_session", [False, True], ids=["connection", "session"])
def test_rolled_back_enqueue_leaves_no_job_event_key_or_order(
    engine: Engine, sa_engine: sa.Engine, use_session: bool
) -> None:
    """A rollback removes the job, its event, its key and the caller's order row together."""
    calls: list[int] = []
    register(engine, calls)
    job_id = in_transaction(engine, sa_engine, use_session, commit=False)

    with pytest.raises(JobNotFound):
        engine.get(job_id)
    assert (count(engine, jobs), count(engine, job_events), count(engine, idempotency_keys)) == (
        0,
        0,
        0,
    )
    assert order_count(sa_engine) == 0
    assert engine.key_holder(KIND, "task:7") is None

    fresh = engine.enqueue(KIND, {"n": 7})
    assert count(engine, jobs) == 1 and engine.key_holder(KIND, "task:7") == fresh
    engine.run_until_idle()
    assert engine.get(fresh).state == "succeeded" and calls == [7]


@pytest.mark.parametrize("use_session", [False, True], ids=["connection", "session"])
def test_committed_enqueue_exists_with_the_order_and_runs(
    engine: Engine, sa_engine: sa.Engine, use_session: bool
) -> None:
    """A commit stores the order row and the job together; the job runs and holds its key."""
    calls: list[int] = []
    register(engine, calls)
    job_id = in_transaction(engine, sa_engine, use_session, commit=True)

    assert order_count(sa_engine) == 1
    view = engine.get(job_id)
    assert view.state == "pending" and [e.trigger for e in view.history] == ["enqueue"]
    assert engine.key_holder(KIND, "task:7") == job_id
    assert engine.enqueue(KIND, {"n": 7}) == job_id
    engine.run_until_idle()
    assert engine.get(job_id).state == "succeeded" and calls == [7]


def test_transactional_enqueue_of_a_held_key_returns_the_holder(
    engine: Engine, sa_engine: sa.Engine
) -> None:
    """Inside a caller transaction a held key dedupes to the committed job and adds nothing."""
    register(engine)
    holder = engine.enqueue(KIND, {"n": 7})
    with sa_engine.connect() as conn:
        conn.begin()
        ids = engine.enqueue_many(KIND, [{"n": 7}, {"n": 8}, {"n": 8}], connection=conn)
        conn.rollback()
    assert ids[0] == holder and ids[1] == ids[2] != holder
    assert count(engine, jobs) == 1 and count(engine, job_events) == 1


class Racer(threading.Thread):
    """Runs ``fn`` in its own thread and keeps what it returned or raised."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as error:  # reported by the test
            self.error = error


@contextlib.contextmanager
def statements_running(*dbs: sa.Engine) -> Iterator[dict[int, tuple[str, int | None]]]:
    """Per thread: the SQL statement it is executing on ``dbs`` right now, and the server
    process running it (PostgreSQL; None on SQLite). A thread is absent between statements
    run through SQLAlchemy; the store's own enqueue paths run the driver directly: on
    SQLite seen by a trace callback (called as each statement starts), on PostgreSQL
    by the server process of the connection out of the pool (no statement text).
    """
    running: dict[int, tuple[str, int | None]] = {}

    def traced(statement: str) -> None:
        running[threading.get_ident()] = (statement, None)

    def checkout(dbapi: Any, *_: Any) -> None:
        if isinstance(dbapi, sqlite3.Connection):
            dbapi.set_trace_callback(traced)
        else:
            running[threading.get_ident()] = ("", dbapi.info.backend_pid)

    def checkin(dbapi: Any, *_: Any) -> None:
        if isinstance(dbapi, sqlite3.Connection):
            dbapi.set_trace_callback(None)
        else:
            running.pop(threading.get_ident(), None)

    def before(conn: sa.Connection, cursor: Any, statement: str, *_: Any) -> None:
        dbapi: Any = conn.connection.dbapi_connection
        pid = dbapi.info.backend_pid if conn.dialect.name == "postgresql" else None
        running[threading.get_ident()] = (statement, pid)

    def after(*_: Any) -> None:
        running.pop(threading.get_ident(), None)

    listeners = [
        ("before_cursor_execute", before),
        ("after_cursor_execute", after),
        ("handle_error", after),
    ]
    pool_listeners = [("checkout", checkout), ("checkin", checkin)]
    for db in dbs:
        for name, fn in listeners:
            sa.event.listen(db, name, fn)
        for name, fn in pool_listeners:
            sa.event.listen(db.pool, name, fn)
    try:
        yield running
    finally:
        for db in dbs:
            for name, fn in listeners:
                sa.event.remove(db, name, fn)
            for name, fn in pool_listeners:
                sa.event.remove(db.pool, name, fn)


def sqlite_write_locked(db: sa.Engine) -> bool:
    """Whether another connection holds the write lock of ``db``'s SQLite file."""
    probe = sqlite3.connect(str(db.url.database), timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as error:
        if "locked" not in str(error):
            raise
        return True
    finally:
        probe.close()


LOCK_WAIT = sa.text(  # what a PostgreSQL backend waits on, if that is a lock the holder has
    "SELECT wait_event_type || '/' || wait_event FROM pg_stat_activity"
    " WHERE pid = :racer AND wait_event_type = 'Lock'"
    " AND CAST(:holder AS integer) = ANY(pg_blocking_pids(pid))"
)
WRITES = ("INSERT", "UPDATE", "DELETE", "BEGIN IMMEDIATE")


def wait_until_blocked(
    holder: sa.Connection,
    racer: Racer,
    running: dict[int, tuple[str, int | None]],
    observer: sa.Engine,
    timeout: float = 10.0,
) -> str:
    """Return once ``racer`` is waiting for a lock held by ``holder``'s open transaction, and
    say what it waits on; fail the test if that does not happen by the deadline.

    PostgreSQL: the racer's server process waits on a lock (pg_stat_activity) and
    ``pg_blocking_pids`` names the holder's. SQLite: the holder has the file's write lock and
    the racer is inside a write statement (which cannot finish before the holder ends).
    """
    postgresql = holder.dialect.name == "postgresql"
    if postgresql:
        holder_pid = holder.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
    else:
        assert sqlite_write_locked(observer), "the first transaction holds no write lock"

    def waits_on() -> str | None:
        statement, pid = running.get(racer.ident or 0, ("", None))
        if not postgresql:
            return statement if statement.lstrip().upper().startswith(WRITES) else None
        if pid is None:
            return None
        with observer.connect() as conn:
            return conn.execute(LOCK_WAIT, {"racer": pid, "holder": holder_pid}).scalar()

    deadline = time.monotonic() + timeout
    while (found := waits_on()) is None:
        if not racer.is_alive() or time.monotonic() > deadline:
            pytest.fail(
                "the race did not happen: the racer never waited for the first transaction"
                f" (finished: {not racer.is_alive()}, result {racer.result!r},"
                f" error {racer.error!r})"
            )
        time.sleep(0.01)
    return found


def test_concurrent_transactional_enqueues_of_one_key_make_one_job(
    engine: Engine, sa_engine: sa.Engine
) -> None:
    """Two caller transactions enqueueing the same new key end with one job holding it.

    The second enqueue is proven to run while the first transaction is open: it waits on
    the first's lock (checked) when the first commits.
    """
    register(engine)
    with statements_running(sa_engine) as running, sa_engine.connect() as conn:
        conn.begin()
        first = engine.enqueue(KIND, {"n": 1}, connection=conn)

        def second() -> int:
            with sa_engine.connect() as other:
                other.begin()
                job_id = engine.enqueue(KIND, {"n": 1}, connection=other)
                other.commit()
                return job_id

        racer = Racer(second)
        racer.start()
        wait_until_blocked(conn, racer, running, observer=sa_engine)
        assert racer.is_alive() and racer.result is None, "the second is still waiting"
        conn.commit()
    racer.join(30)
    assert not racer.is_alive() and racer.error is None
    assert unfinished_by_key(engine) == {"task:1": [first]}
    assert racer.result == first


def test_first_enqueue_of_a_process_inside_a_caller_transaction(
    db_url: str, clock: FrozenClock
) -> None:
    """A fresh engine's first enqueue may join a caller transaction that already wrote rows."""
    create_database(db_url)  # a previous process made the schema
    db = sa.create_engine(db_url)
    meta.create_all(db)
    engine = Engine(db_url, clock=clock, busy_timeout=0.5)
    register(engine)
    try:
        with db.connect() as conn:
            conn.begin()
            conn.execute(sa.insert(orders).values(id=1, item="book"))
            job_id = engine.enqueue(KIND, {"n": 1}, connection=conn)
            conn.commit()
        assert engine.get(job_id).state == "pending" and order_count(db) == 1
    finally:
        engine.close()
        db.dispose()


# -- 6. the prune command and parse_age --------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No app or database from the environment; structlog back to defaults afterwards."""
    monkeypatch.delenv("JOBCHARTS_DB", raising=False)
    monkeypatch.delenv("JOBCHARTS_APP", raising=False)
    yield
    structlog.reset_defaults()


def create_database(db_url: str) -> None:
    """Create the jobcharts schema in a fresh file (the store opens lazily)."""
    made = Engine(db_url)
    made.store  # noqa: B018
    made.close()


def prune_cli(db_url: str, *args: str) -> Any:
    return CliRunner().invoke(cli, ["prune", "--db", db_url, *args])


@pytest.mark.usefixtures("cli_env")
def test_prune_command_deletes_by_age_and_reports_counts(db_url: str) -> None:
    """`jobcharts prune` deletes by age (quarantined only on request) and says how many."""
    # The command uses the real clock: jobs finish 10 days and 1 day before it runs.
    clock = FrozenClock(datetime.now(UTC) - timedelta(days=10))
    producer = Engine(db_url, clock=clock)
    register(producer)
    old = producer.enqueue(KIND, {"n": 1})
    stuck = producer.enqueue(KIND, {"n": 2, "mode": "permanent"})
    producer.run_until_idle()
    clock.advance(9 * DAY)
    recent = producer.enqueue(KIND, {"n": 3})
    producer.run_until_idle()
    producer.close()

    def left() -> set[int]:
        reader = Engine(db_url)
        try:
            return {r.id for r in reader.store.job_list()}
        finally:
            reader.close()

    bad = prune_cli(db_url, "--older-than", "bad")
    assert bad.exit_code != 0 and "--older-than" in bad.output and "not an age" in bad.output
    assert left() == {old, stuck, recent}

    steps = [
        (["--older-than", "7d"], 1, 1, {stuck, recent}),  # old job and its expired key
        # stuck goes now, and its expired key with it
        (["--older-than", "7d", "--include-quarantined"], 1, 1, {recent}),
        (["--older-than", "0"], 1, 0, set()),  # recent's key lives on (TTL 7 days)
        (["--older-than", "0"], 0, 0, set()),
    ]
    for args, n_jobs, n_keys, remaining in steps:
        result = prune_cli(db_url, *args)
        assert result.exit_code == 0, (args, result.output, result.exception)
        assert f"pruned {n_jobs} jobs and {n_keys} expired dedupe keys" in result.stdout, args
        assert left() == remaining, args


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("age", ["bad", "--older-than=-1d", "7w", ""])
def test_prune_command_refuses_a_bad_age(db_url: str, age: str) -> None:
    """A malformed or negative --older-than exits non-zero, naming the option, deleting nothing."""
    create_database(db_url)
    args = [age] if age.startswith("--") else ["--older-than", age]
    result = prune_cli(db_url, *args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert "--older-than" in result.output
    assert "negative" in result.output or "not an age" in result.output


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("age", ["nan", "inf", "1000000d"])
def test_prune_command_handles_non_finite_or_huge_ages_cleanly(db_url: str, age: str) -> None:
    """--older-than nan, inf or an age before year 1 is refused or prunes nothing: no traceback."""
    create_database(db_url)
    result = prune_cli(db_url, "--older-than", age)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("15m", 900.0),
        ("12h", 43_200.0),
        ("7d", 604_800.0),
        (" 7D ", 604_800.0),
        ("1.5h", 5_400.0),
        ("0", 0.0),
    ],
)
def test_parse_age_reads_seconds_and_units(text: str, seconds: float) -> None:
    """parse_age turns plain seconds and s/m/h/d suffixes into seconds."""
    assert parse_age(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-5", "negative"),
        ("-1d", "negative"),
        ("abc", "not an age"),
        ("", "not an age"),
        ("d", "not an age"),
        ("7w", "not an age"),
        ("seven days", "not an age"),
    ],
)
def test_parse_age_refuses_negative_and_garbage(text: str, message: str) -> None:
    """parse_age raises ValueError naming the problem for negative or unparseable ages."""
    with pytest.raises(ValueError, match=message):
        parse_age(text)


# -- 7. property: one unfinished holder per key ------------------------------------------------

OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.integers(0, 3)),
        st.tuples(st.just("run"), st.just(0)),
        # hours, so a pruned job's key can still be live (TTL 2 days, prune after 1 day)
        st.tuples(st.just("advance"), st.integers(0, 72)),
        st.tuples(st.just("prune"), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations=OPERATIONS)
def test_each_key_has_at_most_one_unfinished_job_which_enqueue_returns(
    operations: list[tuple[str, int]],
) -> None:
    """Under any enqueue/run/advance/prune sequence a key has one unfinished holder, returned."""
    with tempfile.TemporaryDirectory() as tmp:
        clock = FrozenClock()
        engine = Engine(f"sqlite:///{Path(tmp) / 'p.db'}", clock=clock, seed=0)
        register(engine, ttl=timedelta(days=2))
        created: dict[int, tuple[int, datetime]] = {}  # key -> (job id, when its key was taken)
        try:
            for op, arg in operations:
                if op == "enqueue":
                    holders = unfinished_by_key(engine).get(f"task:{arg}", [])
                    before = count(engine, jobs)
                    job_id = engine.enqueue(KIND, {"n": arg})
                    if holders:
                        assert job_id == holders[0], "enqueue returns the unfinished holder"
                    if count(engine, jobs) > before:
                        created[arg] = (job_id, clock.now())
                    elif arg in created:
                        assert job_id == created[arg][0], "a deduped enqueue returns the key's job"
                    if arg in created and clock.now() < created[arg][1] + timedelta(days=2):
                        assert job_id == created[arg][0], "within the TTL: the same job"
                elif op == "run":
                    engine.run_until_idle()
                elif op == "advance":
                    clock.advance(arg * 3600)
                else:
                    engine.prune(timedelta(days=1))
                for key, ids in unfinished_by_key(engine).items():
                    assert len(ids) == 1, (key, ids)
                    assert engine.key_holder(KIND, key) == ids[0]
        finally:
            engine.close()


def test_a_zero_ttl_key_is_never_shared_by_two_unfinished_jobs(db_url: str) -> None:
    """An enqueue racing an uncommitted enqueue of the same key returns that job's id.

    The racer is proven to wait on the first transaction's lock (checked) when it commits.
    """
    engine = Engine(db_url)
    engine.job(payload=Task, idempotency=lambda p: f"k:{p.n}", idempotency_ttl=0, kind="k")(
        lambda ctx, p: None
    )
    engine.store  # the schema exists before the caller's transaction  # noqa: B018
    other = sa.create_engine(db_url)
    with statements_running(engine.store.db) as running, other.connect() as conn:
        conn.begin()
        first = engine.enqueue("k", {"n": 1}, connection=conn)
        racer = Racer(lambda: engine.enqueue("k", {"n": 1}))
        racer.start()
        wait_until_blocked(conn, racer, running, observer=other)
        assert racer.is_alive() and racer.result is None, "the racer is still waiting"
        conn.commit()
    racer.join(timeout=30)
    other.dispose()
    assert not racer.is_alive() and racer.error is None
    assert racer.result == first
    assert engine.store.job_count_by_state() == {"pending": 1}
    engine.close()
