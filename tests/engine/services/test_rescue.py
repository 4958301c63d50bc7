"""Rescue of expired leases: never-started claims are released, started ones expire."""

from __future__ import annotations

from pydantic import BaseModel

from engine import Engine, FrozenClock, RetryPolicy
from statecharts import lifecycle, path_errors


class Item(BaseModel):
    n: int


def make(db_url: str, clock: FrozenClock, max_attempts: int = 3) -> tuple[Engine, list[int]]:
    engine = Engine(db_url, clock=clock, lease_seconds=10, seed=1)
    calls: list[int] = []
    engine.job(
        payload=Item,
        idempotency=lambda p: f"i:{p.n}",
        retry=RetryPolicy(max_attempts=max_attempts, base=1, jitter=0),
        kind="item",
    )(lambda ctx, p: calls.append(p.n))
    return engine, calls


def test_claim_that_never_started_is_released_without_counting(
    db_url: str, clock: FrozenClock
) -> None:
    """A claimed job whose handler never started goes back to pending, attempt undone."""
    engine, calls = make(db_url, clock)
    job_id = engine.enqueue("item", {"n": 1})
    batch = engine.claim(clock.now(), 10)  # the worker "crashes" before starting it
    assert [c.job_id for c in batch.jobs] == [job_id]
    assert engine.get(job_id).attempt == 1
    clock.advance(5)
    assert engine.rescue(clock.now()).released == 0, "the lease has not expired yet"
    clock.advance(6)
    report = engine.rescue(clock.now())
    view = engine.get(job_id)
    assert (report.released, report.expired) == (1, 0)
    assert view.state == "pending" and view.attempt == 0 and view.last_error is None
    assert engine.run_until_idle().succeeded == 1 and calls == [1]
    assert engine.get(job_id).attempt == 1
    assert path_errors(lifecycle(), engine.get(job_id).path) == []


def test_started_attempt_whose_lease_expired_is_counted(db_url: str, clock: FrozenClock) -> None:
    """A started job whose lease expired goes to retry_wait with a LeaseExpired error."""
    engine, calls = make(db_url, clock)
    job_id = engine.enqueue("item", {"n": 2})
    batch = engine.claim(clock.now(), 10)
    assert engine.mark_started(batch, batch.jobs, clock.now()) == batch.jobs
    clock.advance(11)
    report = engine.rescue(clock.now())
    view = engine.get(job_id)
    assert (report.released, report.expired, report.retried) == (0, 1, 1)
    assert view.state == "retry_wait" and view.attempt == 1
    assert view.last_error is not None and view.last_error.error_class == "LeaseExpired"
    assert view.history[-1].trigger == "expire" and "lease_expired_at" in view.history[-1].detail
    clock.advance(1)
    engine.run_until_idle()
    assert engine.get(job_id).state == "succeeded" and engine.get(job_id).attempt == 2
    assert calls == [2]


def test_expiry_on_the_last_attempt_quarantines(db_url: str, clock: FrozenClock) -> None:
    """A worker that keeps dying on a job ends in quarantine: expiry counts toward the bound."""
    engine, calls = make(db_url, clock, max_attempts=2)
    job_id = engine.enqueue("item", {"n": 3})
    for _ in range(2):
        clock.advance(5)
        batch = engine.claim(clock.now(), 10)
        engine.mark_started(batch, batch.jobs, clock.now())
        clock.advance(11)
        engine.rescue(clock.now())
    view = engine.get(job_id)
    assert view.state == "quarantined" and view.quarantine_reason == "exhausted"
    assert view.attempt == 2 and calls == []
    assert [e.trigger for e in view.history].count("expire") == 2


def test_heartbeat_keeps_a_lease_and_a_takeover_ends_it(db_url: str, clock: FrozenClock) -> None:
    """Renewing keeps a job from rescue; after a takeover the old holder renews nothing."""
    engine, _ = make(db_url, clock)
    job_id = engine.enqueue("item", {"n": 4})
    batch = engine.claim(clock.now(), 10)
    engine.mark_started(batch, batch.jobs, clock.now())
    for _ in range(3):
        clock.advance(8)
        assert engine.renew(batch.token, [job_id], clock.now()) == {job_id}
        assert engine.rescue(clock.now()).expired == 0
    clock.advance(11)
    assert engine.rescue(clock.now()).expired == 1
    assert engine.renew(batch.token, [job_id], clock.now()) == set()


def test_tick_rescues_before_it_claims(db_url: str, clock: FrozenClock) -> None:
    """One tick rescues an expired never-started claim and runs it in the same pass."""
    engine, calls = make(db_url, clock)
    engine.enqueue("item", {"n": 5})
    engine.claim(clock.now(), 10)
    clock.advance(11)
    report = engine.tick()
    assert (report.released, report.claimed, report.succeeded) == (1, 1, 1)
    assert calls == [5]


def test_inspect_explains_an_expired_lease(db_url: str, clock: FrozenClock) -> None:
    """inspect says a job's lease expired and whether its handler ever started."""
    engine, _ = make(db_url, clock)
    job_id = engine.enqueue("item", {"n": 6})
    engine.claim(clock.now(), 10)
    clock.advance(11)
    answer = engine.get(job_id).explain(lifecycle(), clock.now())["did it run"]
    assert "lease expired" in answer and "never started" in answer


def test_a_job_no_transition_can_rescue_does_not_block_the_others(
    db_url: str, clock: FrozenClock
) -> None:
    """An expired lease in a state its chart no longer has is left for an operator, and no
    longer takes a place in the rescue's batch: the next crashed job is rescued."""
    import sqlalchemy as sa

    from engine.store.schema import jobs

    engine, _ = make(db_url, clock)
    stuck, other = engine.enqueue("item", {"n": 1}), engine.enqueue("item", {"n": 2})
    batch = engine.claim(clock.now(), 10)
    engine.mark_started(batch, batch.jobs, clock.now())
    with engine.store.write() as conn:
        # A deploy removed its state (the row says an older version) and declares nowhere
        # for it to go: stranded, so parked rather than guessed at.
        conn.execute(
            sa.update(jobs).where(jobs.c.id == stuck).values(state="gone", chart_version="0ld")
        )
    clock.advance(11)
    first = engine.rescue(clock.now(), limit=1)  # meets the stuck job first (oldest lease)
    second = engine.rescue(clock.now(), limit=1)
    assert first.expired + second.expired == 1
    assert engine.get(other).state == "retry_wait" and engine.get(stuck).state == "gone"
    engine.close()


def test_an_edited_state_under_the_current_version_is_set_aside_by_the_rescue(
    db_url: str, clock: FrozenClock
) -> None:
    """A state the row's own chart version never had was written by hand: no deploy can
    fix it, so the rescue quarantines it (unknown_state) instead of parking it forever."""
    import sqlalchemy as sa

    from engine.store.schema import jobs

    engine, _ = make(db_url, clock)
    stuck = engine.enqueue("item", {"n": 1})
    batch = engine.claim(clock.now(), 10)
    engine.mark_started(batch, batch.jobs, clock.now())
    with engine.store.write() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == stuck).values(state="gone"))
    clock.advance(11)
    engine.rescue(clock.now())
    view = engine.get(stuck)
    assert (view.state, view.quarantine_reason) == ("quarantined", "unknown_state")
    assert view.lease_expires_at is None and view.finished_at is not None
    assert view.history[-1].trigger == "set_aside" and view.history[-1].from_state == "gone"
    engine.close()


def test_a_parked_job_stays_out_of_rescue_after_a_restart(db_url: str, clock: FrozenClock) -> None:
    """The job no transition can rescue is parked in the database, not in a worker's memory:
    a fresh engine (a restarted worker) never meets it again, and inspect says why."""
    import sqlalchemy as sa

    from engine.store.schema import jobs

    engine, _ = make(db_url, clock)
    stuck = engine.enqueue("item", {"n": 1})
    batch = engine.claim(clock.now(), 10)
    engine.mark_started(batch, batch.jobs, clock.now())
    with engine.store.write() as conn:
        # A deploy removed its state (the row says an older version) and declares nowhere
        # for it to go: stranded, so parked rather than guessed at.
        conn.execute(
            sa.update(jobs).where(jobs.c.id == stuck).values(state="gone", chart_version="0ld")
        )
    clock.advance(11)
    assert engine.rescue(clock.now()).expired == 0
    engine.close()
    restarted, _ = make(db_url, clock)
    other = restarted.enqueue("item", {"n": 2})
    batch = restarted.claim(clock.now(), 10)
    restarted.mark_started(batch, batch.jobs, clock.now())
    clock.advance(11)
    report = restarted.rescue(clock.now(), limit=1)  # the parked job must not take the place
    assert report.expired == 1 and restarted.get(other).state == "retry_wait"
    view = restarted.get(stuck)
    assert view.state == "gone" and view.lease_expires_at is None
    assert view.last_error is not None and view.last_error.error_class == "Unrescuable"
    assert "left for an operator" in view.last_error.message
    restarted.close()
