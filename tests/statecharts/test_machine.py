"""CompiledChart.fire on the standard lifecycle, and the one-shared-Machine design."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import statecharts.machine as machine_module
from statecharts import (
    Chart,
    ChartError,
    CompiledChart,
    Facts,
    Guard,
    S,
    State,
    StateKind,
    T,
    Transition,
    compile_chart,
    lifecycle,
)

NOW = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)

# States are handed to fire() as plain strings, as the engine does with database values;
# see test_fire_accepts_enum_state_names for what happens with S members.
PENDING = S.PENDING.value
RUNNING = S.RUNNING.value
RETRY_WAIT = S.RETRY_WAIT.value
SUCCEEDED = S.SUCCEEDED.value
QUARANTINED = S.QUARANTINED.value
CANCELLED = S.CANCELLED.value

# Attempts left, no timer: the ordinary case.
FRESH = Facts(attempt=1, max_attempts=3)
# The last permitted attempt has been made.
LAST = Facts(attempt=3, max_attempts=3)
# A retry timer that has come due / not yet come due.
DUE_NOW = Facts(attempt=1, max_attempts=3, now=NOW, due_at=NOW - timedelta(seconds=1))
NOT_DUE = Facts(attempt=1, max_attempts=3, now=NOW, due_at=NOW + timedelta(seconds=30))


@pytest.fixture(scope="module")
def compiled() -> CompiledChart:
    return compile_chart(lifecycle())


# Every (trigger, source) of the lifecycle with facts chosen by hand to enable one edge.
REACHABLE = [
    (T.START, PENDING, FRESH, RUNNING),
    (T.START, RETRY_WAIT, DUE_NOW, RUNNING),
    (T.SUCCEED, RUNNING, FRESH, SUCCEEDED),
    (T.FAIL, RUNNING, FRESH, RETRY_WAIT),
    (T.FAIL, RUNNING, LAST, QUARANTINED),
    (T.FAIL_PERMANENT, RUNNING, FRESH, QUARANTINED),
    (T.EXPIRE, RUNNING, FRESH, RETRY_WAIT),
    (T.EXPIRE, RUNNING, LAST, QUARANTINED),
    (T.RELEASE, RUNNING, FRESH, PENDING),
    (T.CANCEL, PENDING, FRESH, CANCELLED),
    (T.CANCEL, RETRY_WAIT, FRESH, CANCELLED),
    (T.CANCEL, RUNNING, FRESH, CANCELLED),  # the handler saw ctx.cancelled
    (T.REQUEUE, QUARANTINED, LAST, PENDING),
    (T.REQUEUE, CANCELLED, FRESH, PENDING),
]


@pytest.mark.parametrize(("trigger", "source", "facts", "dest"), REACHABLE)
def test_fire_takes_the_expected_edge(
    compiled: CompiledChart, trigger: str, source: str, facts: Facts, dest: str
) -> None:
    """Firing a trigger from a state under suitable facts returns the declared edge to dest."""
    taken = compiled.fire(source, trigger, facts)
    assert taken is not None
    assert taken.trigger == trigger
    assert source in taken.sources
    assert taken.dest == dest
    assert taken in compiled.chart.transitions


def test_every_declared_transition_is_reachable(compiled: CompiledChart) -> None:
    """Each declared (transition, source) pair of lifecycle() is taken for some facts."""
    candidates = [FRESH, LAST, DUE_NOW, NOT_DUE]
    for transition in compiled.chart.transitions:
        for source in transition.sources:
            taken = [compiled.fire(source, transition.trigger, f) for f in candidates]
            assert any(t is transition for t in taken), (transition, source)


def test_reachable_table_covers_every_declared_edge(compiled: CompiledChart) -> None:
    """The hand-written REACHABLE table names every (trigger, source, dest) of the lifecycle."""
    declared = {
        (t.trigger, source, t.dest) for t in compiled.chart.transitions for source in t.sources
    }
    table = {(str(trigger), str(source), str(dest)) for trigger, source, _, dest in REACHABLE}
    assert table == declared


@pytest.mark.parametrize("trigger", [T.FAIL, T.EXPIRE])
@pytest.mark.parametrize(
    ("attempt", "max_attempts", "dest"),
    [
        (1, 3, RETRY_WAIT),
        (2, 3, RETRY_WAIT),
        (3, 3, QUARANTINED),
        (4, 3, QUARANTINED),
        (1, 1, QUARANTINED),
        (0, 1, RETRY_WAIT),
    ],
)
def test_attempt_guards_choose_retry_or_quarantine(
    compiled: CompiledChart, trigger: str, attempt: int, max_attempts: int, dest: str
) -> None:
    """A failure retries while attempt < max_attempts and quarantines once they are used up."""
    taken = compiled.fire(RUNNING, trigger, Facts(attempt, max_attempts))
    assert taken is not None
    assert taken.dest == dest


def test_retry_wait_does_not_start_before_due(compiled: CompiledChart) -> None:
    """START from retry_wait is disabled (None) while due_at is still in the future."""
    assert compiled.fire(RETRY_WAIT, T.START, NOT_DUE) is None


def test_retry_wait_starts_exactly_at_due_time(compiled: CompiledChart) -> None:
    """START from retry_wait is enabled when due_at equals now."""
    facts = Facts(attempt=1, max_attempts=3, now=NOW, due_at=NOW)
    taken = compiled.fire(RETRY_WAIT, T.START, facts)
    assert taken is not None
    assert taken.dest == RUNNING


def test_permanent_failure_quarantines_even_with_attempts_left(compiled: CompiledChart) -> None:
    """fail_permanent quarantines regardless of how many attempts remain."""
    taken = compiled.fire(RUNNING, T.FAIL_PERMANENT, Facts(attempt=1, max_attempts=100))
    assert taken is not None
    assert taken.dest == QUARANTINED


def test_unknown_trigger_returns_none(compiled: CompiledChart) -> None:
    """A trigger the chart never declares returns None rather than raising."""
    assert compiled.fire(RUNNING, "explode", FRESH) is None


@pytest.mark.parametrize(
    ("state", "trigger"),
    [
        (PENDING, T.SUCCEED),
        (PENDING, T.FAIL),
        (PENDING, T.REQUEUE),
        (RUNNING, T.START),
        (RUNNING, T.REQUEUE),
        (RETRY_WAIT, T.FAIL),
        (SUCCEEDED, T.START),
        (SUCCEEDED, T.REQUEUE),
        (QUARANTINED, T.FAIL),
        (CANCELLED, T.CANCEL),
    ],
)
def test_trigger_not_valid_in_state_returns_none(
    compiled: CompiledChart, state: str, trigger: str
) -> None:
    """A declared trigger with no edge from the given state returns None."""
    assert compiled.fire(state, trigger, FRESH) is None
    assert compiled.fire(state, trigger, LAST) is None


def test_final_states_only_respond_to_operator_triggers(compiled: CompiledChart) -> None:
    """From every final state, the only enabled triggers are operator transitions."""
    chart = compiled.chart
    for final in chart.states_of(StateKind.FINAL):
        for trigger in chart.triggers:
            for facts in (FRESH, LAST, DUE_NOW):
                taken = compiled.fire(final, trigger, facts)
                assert taken is None or taken.operator, (final, trigger)


def test_require_returns_the_enabled_transition(compiled: CompiledChart) -> None:
    """require() returns the same transition fire() would when one is enabled."""
    taken = compiled.require(PENDING, T.START, FRESH)
    assert taken is compiled.fire(PENDING, T.START, FRESH)
    assert taken.dest == RUNNING


def test_require_raises_chart_error_naming_state_and_trigger(compiled: CompiledChart) -> None:
    """require() on a disabled transition raises ChartError naming the chart, trigger and state."""
    with pytest.raises(ChartError) as info:
        compiled.require(SUCCEEDED, T.START, FRESH)
    message = str(info.value)
    assert "'lifecycle'" in message
    assert "'start'" in message
    assert "'succeeded'" in message


def test_require_raises_for_unknown_trigger(compiled: CompiledChart) -> None:
    """require() with an undeclared trigger raises ChartError."""
    with pytest.raises(ChartError, match="'explode'"):
        compiled.require(RUNNING, "explode", FRESH)


def test_require_raises_when_guard_fails(compiled: CompiledChart) -> None:
    """require() raises ChartError when the edge exists but its guard is false."""
    with pytest.raises(ChartError, match="'retry_wait'"):
        compiled.require(RETRY_WAIT, T.START, NOT_DUE)


def test_guards_are_tried_in_declaration_order() -> None:
    """When two edges of one trigger are both enabled, the first declared one is taken."""
    always = Guard("always", lambda facts: True)
    states = (
        State("a", StateKind.INITIAL),
        State("x", StateKind.FINAL),
        State("y", StateKind.FINAL),
    )
    first_x = compile_chart(
        Chart(
            "order",
            states,
            (Transition("go", ("a",), "x", (always,)), Transition("go", ("a",), "y", (always,))),
        )
    )
    first_y = compile_chart(
        Chart(
            "order",
            states,
            (Transition("go", ("a",), "y", (always,)), Transition("go", ("a",), "x", (always,))),
        )
    )
    taken_x = first_x.fire("a", "go", FRESH)
    taken_y = first_y.fire("a", "go", FRESH)
    assert taken_x is not None
    assert taken_y is not None
    assert taken_x.dest == "x"
    assert taken_y.dest == "y"


def test_all_guards_of_a_transition_must_pass() -> None:
    """A transition with several guards is disabled if any one of them is false."""
    yes = Guard("yes", lambda facts: True)
    no = Guard("no", lambda facts: False)
    chart = Chart(
        "multi",
        (State("a", StateKind.INITIAL), State("b", StateKind.FINAL)),
        (Transition("go", ("a",), "b", (yes, no)),),
    )
    assert compile_chart(chart).fire("a", "go", FRESH) is None


def test_guards_see_the_facts_passed_to_fire() -> None:
    """The Facts object given to fire() is the one the guard receives (guards are pure
    predicates: a decision is remembered by which guards pass, so they may run twice)."""
    seen: list[Facts] = []

    def spy(facts: Facts) -> bool:
        seen.append(facts)
        return True

    chart = Chart(
        "spy",
        (State("a", StateKind.INITIAL), State("b", StateKind.FINAL)),
        (Transition("go", ("a",), "b", (Guard("spy", spy),)),),
    )
    facts = Facts(attempt=7, max_attempts=9, error_class="Boom")
    compile_chart(chart).fire("a", "go", facts)
    assert seen and all(s is facts for s in seen)


def test_compile_chart_builds_exactly_one_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compiling and then firing many times constructs a single transitions.Machine."""
    built: list[Any] = []
    real = machine_module.Machine

    class CountingMachine(real):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(machine_module, "Machine", CountingMachine)
    compiled = compile_chart(lifecycle())
    assert len(built) == 1
    assert compiled.machine is built[0]
    for _ in range(50):
        for trigger, source, facts, _dest in REACHABLE:
            compiled.fire(source, trigger, facts)
    assert len(built) == 1


def test_firing_never_adds_models_to_the_shared_machine() -> None:
    """Firing many times leaves the shared machine's model list empty."""
    compiled = compile_chart(lifecycle())
    assert list(compiled.machine.models) == []
    for _ in range(200):
        for trigger, source, facts, _dest in REACHABLE:
            compiled.fire(source, trigger, facts)
        compiled.fire(SUCCEEDED, T.START, FRESH)
        compiled.fire(RUNNING, "explode", FRESH)
        with pytest.raises(ChartError):
            compiled.require(CANCELLED, T.SUCCEED, FRESH)
    assert list(compiled.machine.models) == []


def test_fire_is_stateless_between_calls(compiled: CompiledChart) -> None:
    """A previous fire() does not change the outcome of the next one (no state is kept)."""
    before = compiled.fire(PENDING, T.START, FRESH)
    compiled.fire(RUNNING, T.FAIL, LAST)
    compiled.fire(QUARANTINED, T.REQUEUE, LAST)
    after = compiled.fire(PENDING, T.START, FRESH)
    assert before is after
    assert after is not None
    assert after.dest == RUNNING


# Hypothesis tests cannot take function-scoped fixtures; one compiled chart is shared.
_SHARED = compile_chart(lifecycle())


@settings(max_examples=200)
@given(attempt=st.integers(1, 50), max_attempts=st.integers(1, 50))
def test_fail_retries_iff_attempts_left(attempt: int, max_attempts: int) -> None:
    """'fail' from running goes to retry_wait iff attempt < max_attempts, else quarantined."""
    taken = _SHARED.fire(RUNNING, T.FAIL, Facts(attempt, max_attempts))
    assert taken is not None
    expected = RETRY_WAIT if attempt < max_attempts else QUARANTINED
    assert taken.dest == expected


def test_fire_accepts_enum_state_names(compiled: CompiledChart) -> None:
    """fire() accepts the lifecycle's S members as states, just like their string values."""
    taken = compiled.fire(S.PENDING, T.START, FRESH)
    assert taken is compiled.fire(PENDING, T.START, FRESH)
    assert taken is not None


def test_fire_accepts_enum_trigger_names(compiled: CompiledChart) -> None:
    """fire() accepts T members as triggers and returns the same edge as their string value."""
    by_enum = compiled.fire(RUNNING, T.SUCCEED, FRESH)
    by_str = compiled.fire(RUNNING, "succeed", FRESH)
    assert by_enum is by_str
    assert by_enum is not None
    assert by_enum.dest == SUCCEEDED


def test_fire_on_an_undeclared_state_names_it(compiled: CompiledChart) -> None:
    """fire() from a state the chart does not declare raises ChartError naming the state."""
    with pytest.raises(ChartError, match="'limbo'"):
        compiled.fire("limbo", T.START, FRESH)


def test_a_remembered_decision_follows_the_guards() -> None:
    """The same state and trigger with other facts: a guard that now fails changes the
    answer (decisions are remembered per guard outcome, not per state and trigger)."""
    chart = Chart(
        "gate",
        (State("a", StateKind.INITIAL), State("b", StateKind.FINAL), State("c", StateKind.FINAL)),
        (
            Transition("go", ("a",), "b", (Guard("has attempts", lambda f: f.attempt < 3),)),
            Transition("go", ("a",), "c"),
        ),
    )
    compiled = compile_chart(chart)
    for _ in range(2):
        assert compiled.fire("a", "go", Facts(attempt=1, max_attempts=3)).dest == "b"
        assert compiled.fire("a", "go", Facts(attempt=3, max_attempts=3)).dest == "c"
