"""The worker commits finished attempts and claims the next jobs in one transaction: both
happen or neither does, their events are told only once it has committed, and reads
inside it see its own writes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.exc import OperationalError

import engine.worker.worker as worker_module
from engine import Engine, JobContext
from engine.events import Event
from engine.harness.bench_statements import _counting
from engine.worker import Worker

WAIT = 30.0


class Item(BaseModel):
    n: int


def wait_until_succeeded(engine: Engine, ids: list[int], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        rows = [engine.store.job_get(i) for i in ids]
        if all(r is not None and r.state == "succeeded" for r in rows):
            return
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def _engine(db_url: str) -> Engine:
    engine = Engine(db_url)

    @engine.job(payload=Item, idempotency=lambda p: f"item:{p.n}")
    def item(ctx: JobContext, p: Item) -> int:
        return p.n

    return engine


def test_reads_and_writes_inside_join_one_transaction_and_roll_back_together(
    db_url: str,
) -> None:
    """Inside one_transaction() an enqueue and a read of it share the transaction (the
    read sees the row before commit); an error rolls back every write made inside."""
    engine = _engine(db_url)
    store = engine.store
    try:
        with pytest.raises(RuntimeError, match="on purpose"), store.one_transaction() as conn:
            job_id = engine.enqueue("item", {"n": 1})
            assert store.joined() is conn
            assert store.job_get(job_id) is not None  # our own write, not yet committed
            raise RuntimeError("on purpose")
        assert store.joined() is None
        assert store.job_get(job_id) is None  # rolled back with the transaction
        with store.one_transaction():
            kept = engine.enqueue("item", {"n": 2})
        assert store.job_get(kept) is not None
    finally:
        engine.close()


def test_events_of_a_rolled_back_transaction_are_never_told(db_url: str) -> None:
    """Telemetry.held(): events are passed on after a normal exit, dropped after an error."""
    engine = _engine(db_url)
    seen: list[str] = []
    engine.telemetry.attach(lambda event: seen.append(event.name))
    try:
        with pytest.raises(RuntimeError), engine.telemetry.held():
            engine.telemetry.info("told.never")
            raise RuntimeError("rolled back")
        with engine.telemetry.held():
            engine.telemetry.info("told.after")
            assert "told.after" not in seen  # not before the transaction has committed
        assert seen == ["told.after"]
    finally:
        engine.close()


def test_a_claim_failing_after_the_commit_loses_nothing_and_repeats_nothing(
    db_url: str,
) -> None:
    """The database fails once in the claim that follows a commit of finished attempts:
    the commit is rolled back with it, kept, and committed by the next try; every job
    succeeds once, with one 'attempt.finished' per job (none told for the rolled back try)."""
    engine = _engine(db_url)
    finished: list[int] = []

    def listen(event: Event) -> None:
        if event.name == "attempt.finished":
            finished.append(event.fields["job_id"])

    engine.telemetry.attach(listen)
    real_claim = engine.claim_due
    failures = {"left": 1, "committed_inside": 0}

    def claim_due(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        joined = engine.store.joined()
        if joined is not None and failures["left"]:
            failures["left"] -= 1
            failures["committed_inside"] = 1
            raise OperationalError("claim", {}, Exception("database is locked"))
        return real_claim(*args, **kwargs)  # type: ignore[arg-type]

    engine.claim_due = claim_due  # type: ignore[method-assign]
    try:
        ids = [engine.enqueue("item", {"n": n}) for n in range(12)]
        worker = Worker(engine, concurrency=2, poll_interval=0.05)
        thread = threading.Thread(target=lambda: worker.run(until_idle=True), daemon=True)
        thread.start()
        thread.join(WAIT)
        assert not thread.is_alive()
        assert failures["committed_inside"] == 1  # the failure did hit a joined commit
        rows = [engine.store.job_get(i) for i in ids]
        assert [r.state for r in rows if r is not None] == ["succeeded"] * len(ids)
        assert sorted(finished) == sorted(ids)  # told once each, after its commit
        for job_id in ids:
            triggers = [e.trigger for e in engine.store.job_events(job_id)]
            assert triggers.count("succeed") == 1
    finally:
        engine.close()


def test_a_slow_attempt_never_holds_back_the_next_claim(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim after a finish waits a moment for attempts that just began, never for
    one that has run a while: quick jobs keep flowing on the other thread. The wait is
    stretched to 2 s, so waiting for the slow attempt at each of the 40 claims could not
    finish in time (at most one claim waits, while the slow one is under 5 ms old)."""
    monkeypatch.setattr(worker_module, "LINGER", 2.0)
    engine = Engine(db_url)
    release = threading.Event()

    @engine.job(payload=Item, idempotency=lambda p: f"item:{p.n}", timeout=120.0)
    def item(ctx: JobContext, p: Item) -> int:
        if p.n == 0:
            assert release.wait(WAIT)
        return p.n

    try:
        engine.enqueue("item", {"n": 0})
        time.sleep(0.01)
        quick = [engine.enqueue("item", {"n": n}) for n in range(1, 41)]
        worker = Worker(engine, concurrency=2, poll_interval=0.05)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        wait_until_succeeded(
            engine, quick, "the quick jobs to run while the slow one held its thread"
        )
        release.set()
        worker.stop()
        thread.join(WAIT)
    finally:
        release.set()
        engine.close()


def test_a_claim_that_keeps_failing_never_holds_back_the_commit(db_url: str) -> None:
    """After the first claim every claim raises (a bug, not the database): the attempts
    already running still have their outcomes committed, alone, and the worker lives on."""
    engine = _engine(db_url)
    real_claim = engine.claim_due
    calls = {"n": 0}

    def claim_due(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("the claim broke")
        return real_claim(*args, **kwargs)  # type: ignore[arg-type]

    engine.claim_due = claim_due  # type: ignore[method-assign]
    try:
        ids = [engine.enqueue("item", {"n": n}) for n in range(4)]
        worker = Worker(engine, concurrency=4, poll_interval=0.05)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        wait_until_succeeded(
            engine, ids, "the finished attempts to commit while the claim kept failing"
        )
        assert thread.is_alive() and calls["n"] > 1
        worker.stop()
        thread.join(WAIT)
    finally:
        engine.close()


def test_a_claim_alone_makes_two_round_trips(db_url: str, backend: str, tmp_path: Path) -> None:
    """PostgreSQL: an idle worker's claim (no finished work to commit with it) makes two
    round trips (BEGIN with the select, then the start's compare-and-set with the COMMIT),
    not four; what it claimed is committed and seen by another connection."""
    if backend != "postgresql":
        pytest.skip("round trips are counted from libpq's protocol trace")
    with _counting(db_url, tmp_path / "trace.txt") as counter:
        engine = _engine(db_url)
        try:
            ids = [engine.enqueue("item", {"n": n}) for n in range(3)]
            before = counter.snapshot()
            batch = engine.claim_due(engine.now(), 3, start=True)
            after = counter.snapshot()
        finally:
            engine.close()
    assert sorted(c.job_id for c in batch.jobs) == sorted(ids)
    assert after.round_trips - before.round_trips == 2
    other = sa.create_engine(db_url, poolclass=sa.pool.NullPool)
    with other.connect() as conn:
        states = conn.execute(sa.text("SELECT state FROM jobs")).scalars().all()
    assert states == ["running"] * 3
