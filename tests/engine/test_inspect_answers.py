"""The four answers stay right where they were wrong: attempts of a flow never requeued,
a job an operator cancelled into its compensation, and --until-idle with a job a rescue
just scheduled for a retry (both backends)."""

from __future__ import annotations

from typing import Any

from engine import Engine, FrozenClock, Invariant, RetryPolicy, Worker
from statecharts import Final, Poll, Work, flow

QUICK = RetryPolicy(max_attempts=3, base=0, jitter=0)


def payout(url: str, clock: FrozenClock | None = None) -> Engine:
    engine = Engine(url, clock=clock)
    chart = flow(
        "mini_payout",
        Work("charge", on={"charged": "await_settlement"}),
        Poll(
            "await_settlement",
            every=60,
            deadline=3600,
            on={"settled": "succeeded"},
            on_deadline="refund",
            on_cancel="refund",
        ),
        Work("refund", on={"refunded": "refunded"}, on_cancel=None),
        Final("refunded", success=False),
    )
    tries: dict[int, int] = {}

    def charge(ctx: Any, _p: Any) -> str:
        tries[ctx.job_id] = tries.get(ctx.job_id, 0) + 1
        if tries[ctx.job_id] < 3:
            raise ConnectionError("gateway busy")
        return "charged"

    engine.flow(
        "payout",
        chart,
        {
            "charge": charge,
            "await_settlement": lambda ctx, p: None,  # not settled yet
            "refund": lambda ctx, p: "refunded",
        },
        idempotency=Invariant("test"),
        retry=QUICK,
    )
    return engine


def test_a_flow_never_requeued_is_not_said_to_be(db_url: str) -> None:
    clock = FrozenClock()
    engine = payout(db_url, clock)
    job = engine.enqueue("payout")
    engine.run_until_idle()
    view = engine.get(job)
    assert view.state == "await_settlement"
    answers = view.explain(engine.chart_of("mini_payout"), clock.now())
    assert answers["did it run"] == "Yes: 3 attempts in all."  # 3 charges; no check yet
    engine.close()


def test_attempts_since_a_requeue_are_counted_from_the_requeue(db_url: str) -> None:
    engine = Engine(db_url)
    down = [True]

    @engine.job(idempotency=Invariant("test"), kind="flaky", retry=RetryPolicy(2, base=0))
    def flaky(ctx: Any, _p: Any) -> None:
        if down[0]:
            raise ConnectionError("down")

    job = engine.enqueue("flaky")
    engine.run_until_idle()
    engine.run_until_idle()
    assert engine.get(job).state == "quarantined"
    down[0] = False
    engine.requeue(job)
    engine.run_until_idle()
    view = engine.get(job)
    assert view.state == "succeeded"
    answer = view.explain(engine.chart_of("lifecycle"), engine.now())["did it run"]
    assert answer == "Yes: 3 attempts in all, 1 since it was last requeued."
    engine.close()


def test_a_cancel_into_a_compensation_is_explained(db_url: str) -> None:
    clock = FrozenClock()
    engine = payout(db_url, clock)
    job = engine.enqueue("payout")
    engine.run_until_idle()
    assert engine.cancel(job) == "refund"  # in await_settlement, no handler holds it
    engine.run_until_idle()
    view = engine.get(job)
    assert view.state == "refunded"
    why = view.explain(engine.chart_of("mini_payout"), clock.now())["why did it fail"]
    assert why.startswith("It did not fail: an operator cancelled it in 'await_settlement'")
    assert "the cancel led to 'refund', and it ended in 'refunded'." in why
    assert why.endswith("(an earlier attempt failed: ConnectionError: gateway busy)")
    engine.close()


def test_until_idle_waits_for_a_job_a_rescue_just_scheduled(db_url: str) -> None:
    """A worker died holding a job; the next worker's rescue schedules its retry a second
    away: --until-idle runs it instead of exiting with the job in retry_wait."""
    engine = Engine(db_url, lease_seconds=1.0)
    retry = RetryPolicy(max_attempts=3, base=1.0, jitter=0)
    engine.job(idempotency=Invariant("test"), kind="work", retry=retry)(lambda ctx, p: "done")
    job = engine.enqueue("work")
    batch = engine.claim(engine.now(), 1)  # the first worker claims, starts, and dies
    engine.mark_started(batch, batch.jobs, engine.now())
    Worker(engine, concurrency=1, poll_interval=0.05).run(until_idle=True)
    view = engine.get(job)
    assert [e.trigger for e in view.history] == ["enqueue", "start", "expire", "start", "succeed"]
    assert view.state == "succeeded"
    engine.close()
