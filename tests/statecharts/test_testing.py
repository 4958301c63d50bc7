"""Generated exploration of charts: covering paths (breadth-first) and a Hypothesis
state machine whose invariants hold on sound charts and fail on broken ones."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from docs.examples.payout import payout_chart
from statecharts import (
    DUE,
    Chart,
    Effect,
    State,
    StateKind,
    Transition,
    is_path,
    lifecycle,
)
from statecharts.testing import (
    DEADLINE_PASSES,
    Config,
    Explorer,
    chart_machine,
    covering_paths,
    declared_edges,
    recorded,
    uncovered,
)

FAST = settings(max_examples=60, stateful_step_count=30, deadline=None)

TestLifecycleMachine = chart_machine(lifecycle()).TestCase
TestLifecycleMachine.settings = FAST
TestPayoutMachine = chart_machine(payout_chart()).TestCase
TestPayoutMachine.settings = FAST


def endless_retries() -> Chart:
    """A chart whose failures retry forever: nothing guards the retry on the attempt."""
    return Chart(
        "endless",
        states=(
            State("pending", StateKind.INITIAL),
            State("running", StateKind.WORK),
            State("retry_wait", StateKind.WAIT),
            State("succeeded", StateKind.FINAL, success=True),
        ),
        transitions=(
            Transition(
                "start", ("pending", "retry_wait"), "running", (DUE,), (Effect.START_ATTEMPT,)
            ),
            Transition("fail", ("running",), "retry_wait", (), (Effect.RELEASE_LEASE,)),
            Transition("succeed", ("running",), "succeeded", (), (Effect.RELEASE_LEASE,)),
        ),
    )


def test_the_machine_of_a_chart_with_endless_retries_fails_its_invariant() -> None:
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            chart_machine(endless_retries()),
            settings=settings(
                max_examples=200,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                report_multiple_bugs=False,
            ),
        )


@pytest.mark.parametrize("chart", [lifecycle(), payout_chart()], ids=["lifecycle", "payout"])
def test_covering_paths_take_every_transition_and_are_valid_paths(chart: Chart) -> None:
    paths = covering_paths(chart)
    assert uncovered(chart, paths) == set()
    for path in paths:
        assert is_path(chart, recorded(path)), path
    taken = {(s.trigger, s.source, s.dest) for p in paths for s in p}
    assert declared_edges(chart) <= taken


def test_the_deadline_dimension_is_explored() -> None:
    """Polling states are visited before and after their deadline; the deadline exit is
    only reachable after time passes."""
    paths = covering_paths(payout_chart())
    deadline = next(p for p in paths if p[-1].trigger == "deadline")
    assert [s.trigger for s in deadline][-2:] == [DEADLINE_PASSES, "deadline"]
    explorer = Explorer(payout_chart())
    before = Config("await_settlement", 0, False, False)
    after = Config("await_settlement", 0, True, False)
    assert {s.trigger for s, _ in explorer.moves(before)} >= {"start", DEADLINE_PASSES}
    assert "start" not in {s.trigger for s, _ in explorer.moves(after)}
    assert "deadline" in {s.trigger for s, _ in explorer.moves(after)}


def test_a_held_job_is_not_claimed_again() -> None:
    """A flow step's state holds both the waiting and the running job: held tells them apart."""
    explorer = Explorer(payout_chart())
    held = Config("charge", 1, False, True)
    triggers = {s.trigger for s, _ in explorer.moves(held)}
    assert "start" not in triggers and {"charged", "fail", "expire", "release"} <= triggers
    waiting = Config("charge", 1, False, False)
    assert {s.trigger for s, _ in explorer.moves(waiting)} == {"start", "cancel"}
