"""Delayed and prioritized jobs, and queues, on real databases with a frozen clock."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pydantic import BaseModel

from engine import Engine, FrozenClock, Invariant, JobContext
from engine.worker import Worker


class N(BaseModel):
    n: int


@pytest.fixture
def ran(engine: Engine) -> list[int]:
    seen: list[int] = []

    @engine.job(payload=N, idempotency=Invariant("tests record runs"), queue="mail")
    def work(ctx: JobContext, p: N) -> None:
        seen.append(p.n)

    return seen


def test_a_delayed_job_waits_for_its_time(
    engine: Engine, clock: FrozenClock, ran: list[int]
) -> None:
    engine.enqueue("work", {"n": 1}, delay=30)
    engine.enqueue("work", {"n": 2}, delay=timedelta(minutes=2))
    engine.enqueue("work", {"n": 3}, run_at=clock.now() + timedelta(seconds=90))
    engine.run_until_idle()
    assert ran == []
    clock.advance(30)
    engine.run_until_idle()
    assert ran == [1]
    clock.advance(60)
    engine.run_until_idle()
    assert ran == [1, 3]
    clock.advance(30)
    engine.run_until_idle()
    assert ran == [1, 3, 2]


def test_bad_times_are_refused_and_nothing_is_stored(engine: Engine, ran: list[int]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        engine.enqueue("work", {"n": 1}, run_at=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="delay must be >= 0"):
        engine.enqueue("work", {"n": 1}, delay=-1)
    assert engine.store.job_count_by_state() == {}


def test_higher_priority_runs_first(engine: Engine, ran: list[int]) -> None:
    for n, priority in ((1, 0), (2, 10), (3, 5), (4, 10)):
        engine.enqueue("work", {"n": n}, priority=priority)
    while engine.tick(limit=1).busy:
        pass
    assert ran == [2, 4, 3, 1]  # by priority, then by due time (enqueue order here)


def test_claims_take_only_the_queues_asked_for(engine: Engine, ran: list[int]) -> None:
    engine.enqueue("work", {"n": 1})  # the kind's queue: mail
    engine.enqueue("work", {"n": 2}, queue="bulk")
    assert engine.get(1).queue == "mail"
    report = engine.tick(queues=["bulk"])
    assert ran == [2] and report.claimed == 1
    assert engine.tick(queues=["other"]).claimed == 0
    assert engine.tick(queues=[]).claimed == 0  # no queue: nothing
    engine.tick(queues=["mail", "bulk"])
    assert ran == [2, 1]


def test_a_worker_serves_only_its_queues(db_url: str) -> None:
    engine = Engine(db_url)
    seen: list[int] = []

    @engine.job(payload=N, idempotency=Invariant("tests record runs"))
    def work(ctx: JobContext, p: N) -> None:
        seen.append(p.n)

    try:
        engine.enqueue("work", {"n": 1}, queue="a")
        engine.enqueue("work", {"n": 2}, queue="b")
        Worker(engine, queues=["b"], poll_interval=0.05).run(until_idle=True)
        assert seen == [2]
        assert engine.get(1).state == "pending"
    finally:
        engine.close()
