"""Retention on both backends: workers prune finished jobs by the app's policy (per state,
per kind), in small batches, one worker at a time, keeping quarantined jobs unless told
and dedupe keys until their TTL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from engine import Engine, FrozenClock, Invariant, Permanent, RegistrationError, Worker
from engine.services import retention as retention_module
from engine.store.store import PRUNE_LOCK

DAY = timedelta(days=1)


def app(url: str, clock: FrozenClock | None = None) -> Engine:
    engine = Engine(url, clock=clock)

    @engine.job(idempotency=Invariant("t"), kind="mail")
    def mail(ctx: Any, _p: Any) -> None:
        return None

    @engine.job(idempotency=Invariant("t"), kind="report")
    def report(ctx: Any, _p: Any) -> None:
        return None

    @engine.job(idempotency=Invariant("t"), kind="broken")
    def broken(ctx: Any, _p: Any) -> None:
        raise Permanent("no")

    return engine


def test_jobs_go_by_the_policy(db_url: str) -> None:
    clock = FrozenClock()
    engine = app(db_url, clock)
    engine.retain("succeeded", 7 * DAY)
    engine.retain("succeeded", DAY, kind="report")
    engine.retain("cancelled", timedelta(hours=1))
    mails = [engine.enqueue("mail") for _ in range(3)]
    reports = [engine.enqueue("report") for _ in range(2)]
    assert len(reports) == 2
    broken = engine.enqueue("broken")
    cancelled = engine.enqueue("mail", delay=3600)
    engine.cancel(cancelled)
    engine.run_until_idle()
    clock.advance(2 * DAY)
    engine.retention.run_once(clock.now())
    left = {r.id for r in engine.store.job_list(limit=100)}
    assert left == {*mails, broken}  # reports after 1 day, the cancel after 1 hour
    clock.advance(6 * DAY)
    engine.retention.run_once(clock.now())
    assert {r.id for r in engine.store.job_list(limit=100)} == {broken}  # quarantined stays
    engine.close()


def test_in_small_batches(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention_module, "BATCH", 3)
    clock = FrozenClock()
    engine = app(db_url, clock)
    engine.retain("succeeded", DAY)
    engine.enqueue_many("mail", [None] * 10)
    engine.run_until_idle()
    clock.advance(2 * DAY)
    assert engine.retention.run_once(clock.now())[0] == 10
    assert engine.store.job_list() == []
    engine.close()


def test_keys_outlive_their_jobs_until_their_ttl(db_url: str) -> None:
    clock = FrozenClock()
    engine = Engine(db_url, clock=clock)
    engine.job(idempotency=lambda p: "the-key", kind="once", idempotency_ttl=10 * DAY)(
        lambda ctx, p: "done"
    )
    engine.retain("succeeded", DAY)
    first = engine.enqueue("once")
    engine.run_until_idle()
    clock.advance(2 * DAY)
    engine.retention.run_once(clock.now())
    assert engine.store.job_get(first) is None
    assert engine.enqueue("once") == first  # still deduplicated by its key
    engine.close()


def test_one_worker_prunes_at_a_time(db_url: str, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite serializes writers anyway: the lock is PostgreSQL's")
    clock = FrozenClock()
    engine = app(db_url, clock)
    engine.retain("succeeded", DAY)
    engine.enqueue("mail")
    engine.run_until_idle()
    clock.advance(2 * DAY)
    other = sa.create_engine(db_url)
    with other.begin() as conn:  # another worker is pruning
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(PRUNE_LOCK)))
        assert engine.retention.run_once(clock.now()) == (0, 0)
    other.dispose()
    assert engine.retention.run_once(clock.now())[0] == 1
    engine.close()


def test_a_worker_runs_the_policy(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.worker import worker as worker_module

    monkeypatch.setattr(worker_module, "RETENTION_DELAY", 0.0)
    engine = app(db_url)
    engine.retain("succeeded", 0)
    job = engine.enqueue("mail")
    engine.run_until_idle()
    Worker(engine, concurrency=1, poll_interval=0.05).run(until_idle=True)
    assert engine.store.job_get(job) is None
    engine.close()


def test_a_bad_rule_is_refused() -> None:
    engine = app("sqlite://")
    with pytest.raises(RegistrationError, match="not a final state"):
        engine.retain("pending", DAY)
    with pytest.raises(Exception, match="unknown job kind"):
        engine.retain("succeeded", DAY, kind="nope")
    engine.retain("succeeded", DAY)
    with pytest.raises(ValueError, match="set twice"):
        engine.retain("succeeded", 2 * DAY)
