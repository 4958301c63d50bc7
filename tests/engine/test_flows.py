"""Multi-step flows on real databases: the payout example end to end, polling states and
their deadlines, per-step retries, registration refusals, and a crash between steps."""

from __future__ import annotations

import enum
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from contextlib import closing
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel

from docs.examples.payout import PAYOUT, FakeGateway, FakeMailer, register
from engine import (
    Engine,
    FrozenClock,
    Invariant,
    JobContext,
    Permanent,
    RegistrationError,
    RetryPolicy,
    StepHandler,
    TransitionNotAllowed,
)
from statecharts import ChartError, Final, Poll, Wait, Work, flow, path_errors

ROOT = Path(__file__).resolve().parents[2]
ORDER = {"order_id": 7, "amount_cents": 1250, "email": "a@b.c"}


def trail(engine: Engine, job_id: int) -> list[tuple[str, str]]:
    return [(e.trigger, e.to_state) for e in engine.get(job_id).history]


@pytest.fixture
def payout(engine: Engine) -> tuple[Engine, FakeGateway, FakeMailer]:
    gateway, mailer = FakeGateway(settle_after=2), FakeMailer()
    register(engine, gateway, mailer)
    return engine, gateway, mailer


def test_payout_settles_and_notifies(
    payout: tuple[Engine, FakeGateway, FakeMailer], clock: FrozenClock
) -> None:
    """charge -> await settlement (three checks a minute apart) -> notify -> succeeded."""
    engine, gateway, mailer = payout
    job = engine.enqueue("payout", ORDER)
    engine.run_until_idle()
    assert engine.get(job).state == "await_settlement"
    for _ in range(3):
        clock.advance(60)
        engine.run_until_idle()
    view = engine.get(job)
    assert view.state == "succeeded"
    assert trail(engine, job) == [
        ("enqueue", "pending"),
        ("start", "charge"),
        ("charged", "await_settlement"),
        ("start", "await_settlement"),
        ("wait", "await_settlement"),
        ("start", "await_settlement"),
        ("wait", "await_settlement"),
        ("start", "await_settlement"),
        ("settled", "notify"),
        ("start", "notify"),
        ("notified", "succeeded"),
    ]
    assert path_errors(PAYOUT, view.path) == []
    assert list(gateway.calls) == ["payout:7:charge"] and list(mailer.sent) == ["payout:7:mail"]
    assert gateway.checks == 3


def test_payout_times_out_and_refunds(
    payout: tuple[Engine, FakeGateway, FakeMailer], clock: FrozenClock
) -> None:
    """No settlement by the deadline: the deadline's declared exit compensates (refund)."""
    engine, gateway, _ = payout
    gateway.settle_after = None
    job = engine.enqueue("payout", ORDER)
    engine.run_until_idle()
    entered = clock.now()
    row = engine.store.job_get(job)
    assert row is not None and row.deadline == entered + timedelta(hours=1)  # persisted
    for _ in range(70):  # a check a minute, past the hour
        clock.advance(60)
        engine.run_until_idle()
    view = engine.get(job)
    assert view.state == "refunded" and view.finished_at is not None
    triggers = Counter(e.trigger for e in view.history)
    assert triggers["wait"] == 59 and triggers["deadline"] == 1  # no check at or after it
    assert ("deadline", "refund") in trail(engine, job)
    assert gateway.checks == 59
    assert list(gateway.calls) == ["payout:7:charge", "payout:7:refund"]
    assert path_errors(PAYOUT, view.path) == []


def test_deadline_fires_after_an_outage_without_a_late_check(
    payout: tuple[Engine, FakeGateway, FakeMailer], clock: FrozenClock
) -> None:
    """Workers down past the deadline: the first tick after takes the deadline exit."""
    engine, gateway, _ = payout
    gateway.settle_after = None
    job = engine.enqueue("payout", ORDER)
    engine.run_until_idle()
    clock.advance(timedelta(hours=5))
    report = engine.run_until_idle()
    assert report.timed == 1
    assert gateway.checks == 0
    assert engine.get(job).state == "refunded"


def test_bounced_payment_is_refunded_and_declined_card_ends(
    engine: Engine, clock: FrozenClock
) -> None:
    class Bouncing(FakeGateway):
        def status(self, charge_id: str) -> str:
            return "bounced"

    gateway = Bouncing()
    register(engine, gateway, FakeMailer())
    bounced = engine.enqueue("payout", ORDER)
    engine.run_until_idle()
    clock.advance(60)
    engine.run_until_idle()
    assert engine.get(bounced).state == "refunded"
    gateway.decline = True
    declined = engine.enqueue("payout", {**ORDER, "order_id": 8})
    report = engine.run_until_idle()
    assert engine.get(declined).state == "declined" and report.ended == 1


class Item(BaseModel):
    n: int


def _flow_engine(engine: Engine, chart_steps, handlers, **kw):  # type: ignore[no-untyped-def]
    chart = flow("steps", *chart_steps)
    return engine.flow(
        "steps",
        chart,
        handlers,
        payload=Item,
        idempotency=Invariant("tests count their own calls"),
        **kw,
    )


def test_attempts_are_counted_per_step_with_each_steps_policy(
    engine: Engine, clock: FrozenClock
) -> None:
    """A step fails twice then passes; the next step starts with its own fresh budget."""
    calls: Counter[str] = Counter()

    def first(ctx: JobContext, item: Item) -> str:
        calls["first"] += 1
        if calls["first"] < 3:
            raise RuntimeError("flaky")
        return "done"

    def second(ctx: JobContext, item: Item) -> None:
        calls["second"] += 1
        raise RuntimeError("always")

    _flow_engine(
        engine,
        [Work("first", on={"done": "second"}), Work("second", on={"ok": "succeeded"})],
        {
            "first": StepHandler(first, retry=RetryPolicy(max_attempts=3, base=1, jitter=0)),
            "second": StepHandler(second, retry=RetryPolicy(max_attempts=2, base=1, jitter=0)),
        },
    )
    job = engine.enqueue("steps", {"n": 1})
    for _ in range(10):
        engine.run_until_idle()
        clock.advance(10)
    view = engine.get(job)
    assert view.state == "quarantined" and view.quarantine_reason == "exhausted"
    assert calls == {"first": 3, "second": 2}
    starts = [(e.to_state, e.attempt) for e in view.history if e.trigger == "start"]
    assert starts == [("first", 1), ("first", 2), ("first", 3), ("second", 1), ("second", 2)]
    assert view.max_attempts == 2


def test_polling_check_errors_retry_within_the_deadline(engine: Engine, clock: FrozenClock) -> None:
    """A check that raises backs off, but never past the state's deadline."""

    def start(ctx: JobContext, item: Item) -> None:
        return None

    def check(ctx: JobContext, item: Item) -> Literal["ready"] | None:
        raise RuntimeError("upstream down")

    _flow_engine(
        engine,
        [
            Work("start", on={"go": "poll"}),
            Poll("poll", every=10, deadline=100, on={"ready": "succeeded"}),
        ],
        {
            "start": start,
            "poll": StepHandler(check, retry=RetryPolicy(max_attempts=50, base=30, jitter=0)),
        },
    )
    job = engine.enqueue("steps", {"n": 1})
    engine.run_until_idle()
    clock.advance(10)
    engine.run_until_idle()  # first check fails: retry due in 30 s
    row = engine.store.job_get(job)
    assert row is not None and (row.due_at - clock.now()) == timedelta(seconds=30)
    clock.advance(30)
    engine.run_until_idle()  # fails again: backoff 60 s, capped at the deadline (60 s left)
    row = engine.store.job_get(job)
    assert row is not None and row.due_at == row.deadline
    clock.advance(60)
    engine.run_until_idle()
    view = engine.get(job)
    assert view.state == "quarantined" and view.quarantine_reason == "deadline"
    assert [e.trigger for e in view.history][-1] == "deadline"


def test_wait_state_sleeps_then_moves_on(engine: Engine, clock: FrozenClock) -> None:
    ran: list[str] = []
    _flow_engine(
        engine,
        [
            Work("a", on={"next": "cool_down"}),
            Wait("cool_down", delay=300, then="b"),
            Work("b", on={"ok": "succeeded"}),
        ],
        {"a": lambda ctx, item: ran.append("a"), "b": lambda ctx, item: ran.append("b")},
    )
    job = engine.enqueue("steps", {"n": 1})
    engine.run_until_idle()
    clock.advance(299)
    engine.run_until_idle()
    assert engine.get(job).state == "cool_down" and ran == ["a"]
    clock.advance(1)
    engine.run_until_idle()
    assert engine.get(job).state == "succeeded" and ran == ["a", "b"]
    assert ("elapsed", "b") in trail(engine, job)


def test_undeclared_outcome_quarantines_with_the_reason(engine: Engine) -> None:
    _flow_engine(
        engine,
        [Work("a", on={"ok": "succeeded", "no": "quarantined"})],
        {"a": lambda ctx, item: "maybe"},
    )
    job = engine.enqueue("steps", {"n": 1})
    engine.run_until_idle()
    view = engine.get(job)
    assert view.state == "quarantined" and view.quarantine_reason == "undeclared_outcome"
    assert view.last_error is not None and "'maybe'" in view.last_error.message


def test_enum_outcomes_and_permanent_go_to_on_error(engine: Engine) -> None:
    class Verdict(enum.StrEnum):
        OK = "ok"
        NO = "no"

    def judge(ctx: JobContext, item: Item) -> Verdict:
        if item.n == 2:
            raise Permanent("bad item")
        return Verdict.OK if item.n == 1 else Verdict.NO

    _flow_engine(
        engine,
        [
            Work("judge", on={"ok": "succeeded", "no": "rejected"}, on_error="undo"),
            Work("undo", on={"undone": "rejected"}),
            Final("rejected", success=False),
        ],
        {"judge": judge, "undo": lambda ctx, item: None},
    )
    ok, failing, no = (engine.enqueue("steps", {"n": n}) for n in (1, 2, 3))
    engine.run_until_idle()
    assert engine.get(ok).state == "succeeded"
    assert engine.get(no).state == "rejected"
    assert [s for _, s in trail(engine, failing)][-2:] == ["undo", "rejected"]


# -- registration ------------------------------------------------------------------------


def test_a_flow_and_its_handlers_must_match(engine: Engine) -> None:
    steps = [Work("a", on={"ok": "b"}), Work("b", on={"done": "succeeded"})]
    fine = {"a": lambda c, i: None, "b": lambda c, i: None}
    with pytest.raises(RegistrationError, match=r"state 'nope'.*does not have"):
        _flow_engine(engine, steps, {**fine, "nope": lambda c, i: None})
    with pytest.raises(RegistrationError, match="'succeeded' is a final state"):
        _flow_engine(engine, steps, {**fine, "succeeded": lambda c, i: None})
    with pytest.raises(RegistrationError, match=r"no handler for state\(s\) \['b'\]"):
        _flow_engine(engine, steps, {"a": fine["a"]})

    def says_maybe(ctx: JobContext, item: Item) -> Literal["ok", "maybe"]:
        return "ok"

    with pytest.raises(RegistrationError, match=r"may return \['maybe'\]"):
        _flow_engine(engine, steps, {**fine, "a": says_maybe})

    def two_way(ctx: JobContext, item: Item) -> Literal["ok"]:
        return "ok"

    with pytest.raises(RegistrationError, match=r"leaves 'a' by \['no'\].*never return"):
        _flow_engine(
            engine,
            [Work("a", on={"ok": "b", "no": "quarantined"}), steps[1]],
            {**fine, "a": two_way},
        )
    assert engine.registry.kinds == ()


def test_flow_declarations_are_checked() -> None:
    with pytest.raises(ChartError, match="engine fires itself"):
        flow("f", Work("a", on={"fail": "succeeded"}))
    with pytest.raises(ChartError, match="first step must be a Work"):
        flow("f", Wait("w", delay=1, then="a"), Work("a", on={"ok": "succeeded"}))
    with pytest.raises(ChartError, match="unknown state"):
        flow("f", Work("a", on={"ok": "nowhere"}))
    with pytest.raises(ChartError, match="needs both every= and deadline="):
        from statecharts import State, StateKind

        State("p", StateKind.WAIT, every=5)


def test_an_unbounded_loop_between_steps_is_refused(engine: Engine) -> None:
    """The release waiver is scoped: a real loop between two steps still fails the check."""
    with pytest.raises(RegistrationError, match="unbounded cycle a -> b -> a"):
        _flow_engine(
            engine,
            [Work("a", on={"again": "b"}), Work("b", on={"back": "a", "ok": "succeeded"})],
            {"a": lambda c, i: "again", "b": lambda c, i: "back"},
        )


# -- cancellation ------------------------------------------------------------------------


def test_cancel_a_waiting_flow_and_a_running_one(engine: Engine, clock: FrozenClock) -> None:
    """Not held: cancelled at once. Held by a handler: it sees ctx.cancelled, ctx.step stops
    before the next step, and the job is cancelled instead of moving on."""
    seen: list[str] = []

    def long_step(ctx: JobContext, item: Item) -> None:
        ctx.step("one", lambda: seen.append("one"))
        assert engine.cancel(ctx.job_id) == "requested"  # an operator, meanwhile
        assert ctx.cancelled
        ctx.step("two", lambda: seen.append("two"))  # raises Cancelled: never runs

    _flow_engine(
        engine,
        [
            Work("work", on={"ok": "later"}),
            Wait("later", delay=60, then="end"),
            Work("end", on={"ok": "succeeded"}),
        ],
        {"work": long_step, "end": lambda c, i: None},
    )
    job = engine.enqueue("steps", {"n": 1})
    report = engine.run_until_idle()
    view = engine.get(job)
    assert view.state == "cancelled" and seen == ["one"] and report.cancelled == 1
    assert trail(engine, job)[-1] == ("cancel", "cancelled")
    waiting = engine.enqueue("steps", {"n": 2}, delay=100)
    assert engine.cancel(waiting) == "cancelled"
    assert engine.get(waiting).state == "cancelled"


def test_a_cancel_requested_while_a_step_finishes_stops_before_the_next(
    engine: Engine,
) -> None:
    """The handler returns its outcome without looking: the commit sees the request and
    cancels instead of moving to the next step."""

    def quiet(ctx: JobContext, item: Item) -> None:
        engine.cancel(ctx.job_id)

    ran_next: list[int] = []
    _flow_engine(
        engine,
        [Work("a", on={"ok": "b"}), Work("b", on={"ok": "succeeded"})],
        {"a": quiet, "b": lambda c, i: ran_next.append(1)},
    )
    job = engine.enqueue("steps", {"n": 1})
    engine.run_until_idle()
    assert engine.get(job).state == "cancelled" and ran_next == []


def test_a_cancel_requested_on_the_last_step_still_succeeds(engine: Engine) -> None:
    def last(ctx: JobContext, item: Item) -> None:
        engine.cancel(ctx.job_id)  # too late: the work is done

    _flow_engine(engine, [Work("a", on={"ok": "succeeded"})], {"a": last})
    job = engine.enqueue("steps", {"n": 1})
    engine.run_until_idle()
    assert engine.get(job).state == "succeeded"


# -- a real crash between steps ------------------------------------------------------------


def test_a_flow_survives_worker_crashes_between_and_inside_steps(
    db_url: str, tmp_path: Path
) -> None:
    """Workers are SIGKILLed during the settlement check and again before the mail: each
    next worker resumes at the right step; the charge (an earlier step) is never repeated,
    and every effect happened exactly once."""
    from tests.engine.flow_app import FAST

    effects = tmp_path / "effects.db"
    setup = Engine(db_url)
    register(setup, FakeGateway(), FakeMailer(), FAST)
    job = setup.enqueue("payout", ORDER, correlation_id="crash")
    setup.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHARTS_")}
    env.update(PYTHONPATH=str(ROOT), FLOW_EFFECTS=str(effects), FLOW_CRASH_AT="status,notify")
    command = [sys.executable, "-m", "engine.cli", "--log-level", "warning", "worker"]
    command += ["--app", "tests.engine.flow_app:make", "--db", db_url]
    command += ["--lease", "1", "--until-idle", "--poll", "0.05"]
    reader = Engine(db_url)
    register(reader, FakeGateway(), FakeMailer(), FAST)
    kills = 0
    try:
        for _ in range(30):  # a worker per run, until the job is final
            done = subprocess.run(
                command, cwd=ROOT, env=env, capture_output=True, timeout=120, check=False
            )
            if done.returncode != 0:
                assert done.returncode == -signal.SIGKILL, done.stderr.decode()
                kills += 1
            if reader.get(job).state == "succeeded":
                break
            time.sleep(0.5)  # a dead worker's 1 s lease runs out; a retry's backoff passes
        view = reader.get(job)
        assert view.state == "succeeded" and kills == 2
        assert path_errors(FAST, view.path) == []
        assert [(e.trigger, e.to_state, e.attempt) for e in view.history] == [
            ("enqueue", "pending", 0),
            ("start", "charge", 1),
            ("charged", "await_settlement", 1),
            ("start", "await_settlement", 1),
            ("expire", "await_settlement", 1),  # killed during the check
            ("start", "await_settlement", 2),
            ("settled", "notify", 2),
            ("start", "notify", 1),
            ("expire", "notify", 1),  # killed before mailing
            ("start", "notify", 2),
            ("notified", "succeeded", 2),
        ]
    finally:
        reader.close()
    with closing(sqlite3.connect(effects)) as conn:
        calls = Counter(what for _, what in conn.execute("select key, what from calls"))
    assert calls == {"charge": 1, "mail": 1}


def test_inspect_explains_a_flow_between_steps(
    payout: tuple[Engine, FakeGateway, FakeMailer], clock: FrozenClock
) -> None:
    engine, gateway, _ = payout
    gateway.settle_after = None
    job = engine.enqueue("payout", ORDER)
    engine.run_until_idle()
    view = engine.get(job)
    answers = view.explain(PAYOUT, clock.now())
    assert answers["did it succeed"] == "Not yet: it is 'await_settlement'."
    assert "'await_settlement' runs at" in answers["will it retry"]
    assert "deadline" in answers["will it retry"] and view.deadline is not None
    clock.advance(timedelta(hours=2))
    engine.run_until_idle()
    answers = engine.get(job).explain(PAYOUT, clock.now())
    assert answers["did it succeed"].startswith("No: it ended in 'refunded'")


def test_inspect_shows_a_pending_cancel_request(engine: Engine) -> None:
    answers: dict[str, str] = {}

    def slow(ctx: JobContext, item: Item) -> None:
        engine.cancel(ctx.job_id)
        view = engine.get(ctx.job_id)
        answers.update(view.explain(engine.chart_of("steps"), engine.now()))
        assert view.cancel_requested_at is not None

    _flow_engine(
        engine,
        [Work("a", on={"ok": "b"}), Work("b", on={"ok": "succeeded"})],
        {"a": slow, "b": lambda c, i: None},
    )
    job = engine.enqueue("steps", {"n": 1})
    engine.run_until_idle()
    assert answers["will it retry"].startswith("No: a cancel was requested")
    view = engine.get(job)
    assert view.state == "cancelled" and view.cancel_requested_at is None  # no longer pending
    assert [e.trigger for e in view.history][-1] == "cancel"


def test_a_loop_through_a_deadline_exit_or_on_error_is_refused(engine: Engine) -> None:
    """A deadline exit or an exhausted step that enters another step renews the counter it
    guards: a loop through it is endless, and the static check says so."""
    with pytest.raises(RegistrationError, match="unbounded cycle"):
        _flow_engine(
            engine,
            [
                Work("submit", on={"submitted": "poll"}),
                Poll("poll", every=10, deadline=60, on={"ok": "succeeded"}, on_deadline="submit"),
            ],
            {"submit": lambda c, i: None, "poll": lambda c, i: None},
        )
    with pytest.raises(RegistrationError, match="unbounded cycle"):
        _flow_engine(
            engine,
            [
                Work("a", on={"ok": "succeeded"}, on_error="b"),
                Work("b", on={"ok": "succeeded"}, on_error="a"),
            ],
            {"a": lambda c, i: None, "b": lambda c, i: None},
        )


# -- cancel and compensation (review regressions) -----------------------------------------


def test_cancel_after_the_charge_compensates_with_a_refund(
    payout: tuple[Engine, FakeGateway, FakeMailer], clock: FrozenClock
) -> None:
    """The payout declares on_cancel="refund" once the card is charged: a cancel while it
    waits for settlement refunds, and the refund itself cannot be cancelled."""
    engine, gateway, _ = payout
    gateway.settle_after = None
    job = engine.enqueue("payout", ORDER)
    engine.run_until_idle()
    assert engine.cancel(job) == "refund"
    with pytest.raises(TransitionNotAllowed, match="cannot cancel"):
        engine.cancel(job)  # the compensation runs to its end
    engine.run_until_idle()
    assert engine.get(job).state == "refunded"
    assert list(gateway.calls) == ["payout:7:charge", "payout:7:refund"]
    assert ("cancel", "refund") in trail(engine, job)


def test_a_cancel_during_a_check_that_bounces_still_refunds(
    engine: Engine, clock: FrozenClock
) -> None:
    class CancelledWhileChecking(FakeGateway):
        def status(self, charge_id: str) -> str:
            assert engine.cancel(1) == "requested"
            return "bounced"

    gateway = CancelledWhileChecking()
    register(engine, gateway, FakeMailer())
    job = engine.enqueue("payout", ORDER)
    engine.run_until_idle()
    clock.advance(60)
    engine.run_until_idle()
    assert engine.get(job).state == "refunded"
    assert list(gateway.calls) == ["payout:7:charge", "payout:7:refund"]


def test_an_outcome_that_ends_the_job_stands_against_a_cancel(engine: Engine) -> None:
    """A flow's own final state (here: rejected) is what happened; the cancel is moot."""

    def judge(ctx: JobContext, item: Item) -> str:
        engine.cancel(ctx.job_id)
        return "no"

    _flow_engine(
        engine,
        [Work("judge", on={"no": "rejected", "ok": "succeeded"}), Final("rejected", success=False)],
        {"judge": judge},
    )
    job = engine.enqueue("steps", {"n": 1})
    engine.run_until_idle()
    assert engine.get(job).state == "rejected"


def test_a_cancel_between_claim_and_start_never_runs_the_handler(engine: Engine) -> None:
    ran: list[int] = []
    _flow_engine(engine, [Work("a", on={"ok": "succeeded"})], {"a": lambda c, i: ran.append(1)})
    job = engine.enqueue("steps", {"n": 1})
    batch = engine.claim(engine.now(), 10)
    assert [c.job_id for c in batch.jobs] == [job]
    assert engine.cancel(job) == "requested"
    assert engine.mark_started(batch, batch.jobs, engine.now()) == []
    assert engine.get(job).state == "cancelled" and ran == []


def test_a_held_job_whose_chart_has_no_cancel_there_refuses_the_request(
    engine: Engine,
) -> None:
    """Nothing is recorded that the chart could never honour (it would leave the job stuck)."""
    from statecharts import lifecycle

    base = lifecycle("no_cancel_while_running")
    chart = replace(
        base,
        transitions=tuple(
            replace(t, sources=("pending", "retry_wait")) if t.trigger == "cancel" else t
            for t in base.transitions
        ),
    )
    refusals: list[str] = []

    def handler(ctx: JobContext, item: Item) -> None:
        with pytest.raises(TransitionNotAllowed, match="no cancel from there") as refused:
            engine.cancel(ctx.job_id)
        refusals.append(str(refused.value))

    engine.job(payload=Item, idempotency=Invariant("test"), chart=chart, kind="plain")(handler)
    job = engine.enqueue("plain", {"n": 1})
    engine.run_until_idle()
    assert engine.get(job).state == "succeeded" and len(refusals) == 1


# -- deadlines (review regressions) ----------------------------------------------------------


def test_not_yet_after_the_deadline_quarantines_with_the_reason(
    engine: Engine, clock: FrozenClock
) -> None:
    def slow_check(ctx: JobContext, item: Item) -> None:
        clock.advance(120)  # the check itself outlives the deadline, then says "not yet"

    _flow_engine(
        engine,
        [
            Work("a", on={"go": "poll"}),
            Poll("poll", every=10, deadline=100, on={"ok": "succeeded"}),
        ],
        {"a": lambda c, i: None, "poll": slow_check},
    )
    job = engine.enqueue("steps", {"n": 1})
    engine.run_until_idle()
    clock.advance(10)
    engine.run_until_idle()
    view = engine.get(job)
    assert (view.state, view.quarantine_reason) == ("quarantined", "deadline")
    assert view.last_error is not None and view.last_error.error_class == "DeadlinePassed"
    assert ("wait", "quarantined") in trail(engine, job)


def test_a_poll_must_check_before_its_deadline() -> None:
    """A poll whose interval is not shorter than its deadline would never check."""
    with pytest.raises(ChartError, match="would never check"):
        flow(
            "f",
            Work("a", on={"go": "poll"}),
            Poll("poll", every=3600, deadline=300, on={"ok": "succeeded"}),
        )


def test_a_cancel_while_charging_keeps_the_charge_and_refunds_it(
    engine: Engine, clock: FrozenClock
) -> None:
    """The charge happened: its outcome commits, then the pending cancel is taken from the
    state it led to, whose on_cancel is the refund."""

    class CancelledWhileCharging(FakeGateway):
        def charge(self, key: str, amount_cents: int) -> dict[str, object]:
            assert engine.cancel(1) == "requested"
            return super().charge(key, amount_cents)

    gateway = CancelledWhileCharging()
    register(engine, gateway, FakeMailer())
    job = engine.enqueue("payout", ORDER)
    engine.run_until_idle()
    assert trail(engine, job)[1:] == [
        ("start", "charge"),
        ("charged", "await_settlement"),
        ("cancel", "refund"),
        ("start", "refund"),
        ("refunded", "refunded"),
    ]
    assert list(gateway.calls) == ["payout:7:charge", "payout:7:refund"]
    assert engine.get(job).cancel_requested_at is None


def test_a_cancel_during_a_failing_step_still_runs_its_compensation(engine: Engine) -> None:
    undone: list[int] = []

    def ship(ctx: JobContext, item: Item) -> None:
        engine.cancel(ctx.job_id)
        raise Permanent("the carrier refused")

    _flow_engine(
        engine,
        [
            Work("ship", on={"shipped": "succeeded"}, on_error="undo"),
            Work("undo", on={"undone": "rejected"}, on_cancel=None),
            Final("rejected", success=False),
        ],
        {"ship": ship, "undo": lambda c, i: undone.append(1)},
    )
    job = engine.enqueue("steps", {"n": 1})
    engine.run_until_idle()
    assert engine.get(job).state == "rejected" and undone == [1]


def test_a_wait_can_compensate_on_cancel(engine: Engine) -> None:
    _flow_engine(
        engine,
        [
            Work("reserve", on={"reserved": "cool_off"}),
            Wait("cool_off", delay=3600, then="done", on_cancel="release_stock"),
            Work("done", on={"ok": "succeeded"}),
            Work("release_stock", on={"released": "cancelled"}, on_cancel=None),
        ],
        {
            "reserve": lambda c, i: None,
            "done": lambda c, i: None,
            "release_stock": lambda c, i: None,
        },
    )
    job = engine.enqueue("steps", {"n": 1})
    engine.run_until_idle()
    assert engine.cancel(job) == "release_stock"
    engine.run_until_idle()
    assert trail(engine, job)[-1] == ("released", "cancelled")


def test_a_wait_timer_fires_while_its_kind_is_at_its_limit(
    engine: Engine, clock: FrozenClock
) -> None:
    """A kind limited to 1 running, with a job holding that slot: the wait states of its
    other jobs still end on time (a limit holds back starts, not timers)."""
    _flow_engine(
        engine,
        [
            Work("a", on={"next": "cool_down"}),
            Wait("cool_down", delay=300, then="b"),
            Work("b", on={"ok": "succeeded"}),
        ],
        {"a": lambda ctx, item: None, "b": lambda ctx, item: None},
        concurrency=1,
    )
    waiting = [engine.enqueue("steps", {"n": n}) for n in (1, 2)]
    engine.run_until_idle()
    assert [engine.get(j).state for j in waiting] == ["cool_down", "cool_down"]
    holder = engine.enqueue("steps", {"n": 3})
    held = engine.claim(engine.now(), 1)
    assert [c.job_id for c in held.jobs] == [holder]  # the kind's one slot is taken
    clock.advance(300)
    batch = engine.claim(engine.now(), 5)
    assert not batch.jobs and batch.timed == 2
    assert [engine.get(j).state for j in waiting] == ["b", "b"]
    assert batch.held  # both wait on the limit now, to start b
