"""The one instrumentation point: what the engine reports through ``engine.telemetry``."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel

from engine import Engine, FrozenClock, Invariant, RetryPolicy
from engine.events import Event
from engine.report import TickReport
from engine.store import EventRow, Move


class Item(BaseModel):
    n: int


def make(db_url: str, clock: FrozenClock) -> tuple[Engine, list[Event]]:
    engine = Engine(db_url, clock=clock, lease_seconds=10, seed=1)
    seen: list[Event] = []
    engine.telemetry.attach(seen.append)
    return engine, seen


def names(events: list[Event]) -> list[str]:
    return [e.name for e in events]


def test_enqueue_attempts_rescues_and_schedules_are_reported(
    db_url: str, clock: FrozenClock
) -> None:
    engine, seen = make(db_url, clock)
    engine.job(payload=Item, idempotency=lambda p: f"i:{p.n}", kind="item")(lambda ctx, p: None)
    fired: list[int] = []
    engine.poller(60, kind="tick", misfire="once")(lambda ctx, p: fired.append(1))
    job = engine.enqueue("item", {"n": 1})
    engine.enqueue("item", {"n": 1})
    engine.run_until_idle()
    assert names(seen).count("job.enqueued") == 1 and "job.deduplicated" in names(seen)
    finished = [e for e in seen if e.name == "attempt.finished" and e.fields["job_id"] == job]
    assert len(finished) == 1 and finished[0].fields["state"] == "succeeded"
    seen.clear()
    clock.advance(60)
    engine.tick()
    assert "schedule.fired" in names(seen) and fired == [1]
    crashed = engine.enqueue("item", {"n": 2})
    batch = engine.claim(clock.now(), 10)
    engine.mark_started(batch, batch.jobs, clock.now())  # then the worker dies
    seen.clear()
    clock.advance(11)
    engine.rescue(clock.now())
    rescued = [e for e in seen if e.name == "job.rescued"]
    assert [e.fields["job_id"] for e in rescued] == [crashed] and rescued[0].level == "warning"
    engine.close()


def test_a_failing_subscriber_never_breaks_the_engine(db_url: str, clock: FrozenClock) -> None:
    engine, seen = make(db_url, clock)

    def broken(event: Event) -> None:
        raise RuntimeError("the metrics backend is down")

    engine.telemetry.attach(broken)
    engine.job(payload=Item, idempotency=lambda p: f"i:{p.n}", kind="item")(lambda ctx, p: None)
    job = engine.enqueue("item", {"n": 1})
    assert engine.run_until_idle().succeeded == 1
    assert engine.get(job).state == "succeeded" and "attempt.finished" in names(seen)
    engine.telemetry.detach(broken)
    engine.close()


def test_the_worker_id_is_read_at_each_move(db_url: str, clock: FrozenClock) -> None:
    """An app may rename its worker after building the engine: history says the new name."""
    engine, _ = make(db_url, clock)
    engine.job(payload=Item, idempotency=Invariant("no-op"), kind="item")(lambda ctx, p: None)
    engine.worker_id = "host-a"
    job = engine.enqueue("item", {"n": 1})
    engine.run_until_idle()
    assert {e.worker for e in engine.get(job).history} == {"host-a"}
    engine.close()


def test_a_misspelt_option_is_refused_where_it_is_written() -> None:
    engine = Engine("sqlite://")
    with pytest.raises(TypeError, match="retries"):
        engine.cron("* * * * *", retries=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="retries"):
        engine.job(retries=3)  # type: ignore[call-overload]
    assert engine.registry.kinds == () and not engine.schedules


def test_an_expire_counts_by_its_trigger_wherever_it_leads() -> None:
    """A lost attempt is counted expired, then quarantined or retried (as before the
    restructure), even when its chart's exhaustion edge leads to a final state."""
    from statecharts import Final, Work, flow

    chart = flow(
        "f",
        Work("work", on={"done": "succeeded"}, on_error="failed"),
        Final("failed", success=False),
    )
    event = EventRow("expire", "work", "failed", 1, FrozenClock().now())
    report = TickReport()
    report.count(Move(1, "work", 1, "t", {"state": "failed"}, event), chart)
    assert (report.expired, report.retried, report.ended) == (1, 1, 0)
    quarantine = Move(2, "work", 1, "t", {"state": "quarantined", "quarantine_reason": "x"}, event)
    report.count(quarantine, chart)
    assert (report.expired, report.quarantined) == (2, 1)


def test_retry_policy_still_bounds_the_counted_attempts(db_url: str, clock: FrozenClock) -> None:
    """Counting goes through one classifier: a failing job is retried, then quarantined."""
    engine, _ = make(db_url, clock)

    def fail(ctx: object, p: Item) -> None:
        raise RuntimeError("boom")

    policy = RetryPolicy(max_attempts=2, base=1, jitter=0)
    engine.job(payload=Item, idempotency=Invariant("x"), kind="bad", retry=policy)(fail)
    engine.enqueue("bad", {"n": 1})
    first = engine.run_until_idle()
    clock.advance(timedelta(seconds=5))
    second = engine.run_until_idle()
    assert (first.retried, second.quarantined) == (1, 1)
    engine.close()
