"""Static checks: each has a chart that fails it and one that passes; waivers need reasons."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from engine import Engine, Invariant, NoPayload, RegistrationError
from engine.cli import cli
from statecharts import (
    ATTEMPTS_EXHAUSTED,
    ATTEMPTS_LEFT,
    DUE,
    Chart,
    ChartError,
    Effect,
    Guard,
    Migration,
    State,
    StateKind,
    Transition,
    Waiver,
    lifecycle,
)
from statecharts.checks import CHECKS, check_chart, failures
from tests.statecharts.charts import DEADLINE_PASSED, payout

INIT, W, A, F = StateKind.INITIAL, StateKind.WORK, StateKind.WAIT, StateKind.FINAL
NEVER = Guard("never", lambda f: False)
ALWAYS = Guard("always", lambda f: True)


def chart(*transitions: Transition, states: tuple[State, ...] | None = None, **kw) -> Chart:  # type: ignore[no-untyped-def]
    return Chart(
        "c",
        states
        or (
            State("new", INIT),
            State("busy", W),
            State("waiting", A),
            State("done", F, success=True),
            State("failed", F, success=False),
        ),
        transitions,
        **kw,
    )


GOOD = (
    Transition("start", ("new", "waiting"), "busy", (DUE,), (Effect.START_ATTEMPT,)),
    Transition("ok", ("busy",), "done"),
    Transition("fail", ("busy",), "waiting", (ATTEMPTS_LEFT,)),
    Transition("fail", ("busy",), "failed", (ATTEMPTS_EXHAUSTED,)),
)

BAD = {
    "reachable": chart(
        *GOOD,
        states=(
            State("new", INIT),
            State("busy", W),
            State("waiting", A),
            State("orphan", W),
            State("done", F, success=True),
            State("failed", F, success=False),
        ),
    ),
    "terminates": chart(
        Transition("start", ("new", "waiting"), "busy", (DUE,), (Effect.START_ATTEMPT,)),
        Transition("fail", ("busy",), "waiting", (ATTEMPTS_LEFT,)),
        Transition("give_up", ("busy",), "done", (NEVER,)),  # never enabled
        Transition("stop", ("new",), "failed"),
    ),
    "bounded_cycles": chart(
        Transition("start", ("new", "waiting"), "busy", (DUE,), (Effect.START_ATTEMPT,)),
        Transition("ok", ("busy",), "done"),
        Transition("fail", ("busy",), "waiting"),  # no attempt bound: retried forever
        Transition("stop", ("waiting",), "failed", (ATTEMPTS_EXHAUSTED,)),
    ),
    "wait_exits": chart(
        Transition("begin", ("new",), "busy", (), (Effect.START_ATTEMPT,)),
        Transition("ok", ("busy",), "done"),
        Transition("park", ("busy",), "waiting", (ATTEMPTS_LEFT,)),
        Transition("fail", ("busy",), "failed", (ATTEMPTS_EXHAUSTED,)),
        Transition("wake", ("waiting",), "failed"),  # not by time
    ),
    "not_shadowed": chart(
        *GOOD[:2],
        Transition("fail", ("busy",), "failed"),  # unguarded, declared first
        Transition("fail", ("busy",), "waiting", (ATTEMPTS_LEFT,)),
    ),
    "deterministic": chart(
        *GOOD[:2],
        Transition("fail", ("busy",), "waiting", (ATTEMPTS_LEFT,)),
        Transition("fail", ("busy",), "failed", (ALWAYS,)),  # overlaps the first
    ),
    # 'busy' is entered only by a claim: a job migrated there would hold no lease.
    "migrations": chart(*GOOD, migrations=(Migration("gone", "busy"),)),
}


def verdicts(c: Chart) -> dict[str, bool]:
    return {f.check: f.ok for f in check_chart(c)}


def test_a_well_formed_chart_passes_every_check() -> None:
    """The small retrying chart, the payout chart and the lifecycle pass (or are waived)."""
    assert all(verdicts(chart(*GOOD)).values())
    assert all(verdicts(payout()).values())
    assert failures(lifecycle()) == []


@pytest.mark.parametrize("name", sorted(BAD))
def test_each_check_catches_its_fault(name: str) -> None:
    """A chart built to break one check fails that check (and names the culprit)."""
    findings = {f.check: f for f in check_chart(BAD[name])}
    assert not findings[name].ok, findings[name]
    assert findings[name].message


def test_absorbing_is_enforced_when_the_chart_is_declared() -> None:
    """A non-operator transition out of a final state is refused at declaration already."""
    with pytest.raises(ChartError, match="absorbing"):
        chart(*GOOD, Transition("again", ("done",), "new"))
    assert verdicts(chart(*GOOD, Transition("redo", ("done",), "new", operator=True)))["absorbing"]


def test_a_deadline_bounds_a_polling_cycle() -> None:
    """A polling self-loop is bounded by its deadline guard; without it, it is not."""
    assert verdicts(payout())["bounded_cycles"]
    unbounded = Chart(
        "poller",
        (State("new", INIT), State("polling", A), State("done", F, success=True)),
        (
            Transition("start", ("new",), "polling"),
            Transition("poll", ("polling",), "polling", (Guard("pending", lambda f: True),)),
            Transition("start", ("polling",), "done", (DEADLINE_PASSED,)),
        ),
    )
    assert not verdicts(unbounded)["bounded_cycles"]


def test_waivers_need_a_reason_and_are_reported() -> None:
    """A waived failure passes, keeps its message, and carries its written reason."""
    with pytest.raises(ChartError, match="reason"):
        Waiver("bounded_cycles", "  ")
    waived = Chart(
        "c",
        BAD["bounded_cycles"].states,
        BAD["bounded_cycles"].transitions,
        waivers=(Waiver("bounded_cycles", "the upstream API caps retries itself"),),
    )
    finding = next(f for f in check_chart(waived) if f.check == "bounded_cycles")
    assert not finding.ok and finding.passes and "caps retries" in (finding.waived or "")
    assert failures(waived) == []
    assert set(CHECKS) == {f.check for f in check_chart(waived)}


def test_registration_runs_the_checks() -> None:
    """A job whose chart fails a static check is refused, naming the check."""
    engine = Engine("sqlite://")
    bad = Chart(
        "bad",
        lifecycle().states,
        (*lifecycle().transitions, Transition("fail", ("running",), "running")),
        waivers=lifecycle().waivers,
    )
    with pytest.raises(RegistrationError, match=r"not_shadowed|deterministic|bounded_cycles"):
        engine.job(payload=NoPayload, idempotency=Invariant("t"), kind="k", chart=bad)(
            lambda ctx, p: None
        )


def test_cli_check_prints_findings_and_waivers() -> None:
    """`jobcharts check` lists every check, prints waiver reasons, exits 0 when all pass."""
    result = CliRunner().invoke(cli, ["check"])
    assert result.exit_code == 0, result.output
    assert (
        "waived  bounded_cycles" in result.output and "reason: running -> pending" in result.output
    )
    assert result.output.count("  ok      ") == len(CHECKS) - 1
