"""Definition-time validation of charts: bad declarations fail loudly with clear messages."""

from __future__ import annotations

from enum import StrEnum

import pytest

from statecharts import Chart, ChartError, State, StateKind, Transition, lifecycle


class _N(StrEnum):
    """State and trigger names used by the small test charts."""

    A = "a"
    B = "b"
    DONE = "done"
    GO = "go"


def _states(*extra: State) -> tuple[State, ...]:
    return (
        State("a", StateKind.INITIAL),
        State("b", StateKind.WORK),
        State("done", StateKind.FINAL, success=True),
        *extra,
    )


def _chart(*transitions: Transition, states: tuple[State, ...] | None = None) -> Chart:
    return Chart(
        name="tiny",
        states=_states() if states is None else states,
        transitions=transitions,
    )


def test_a_well_formed_chart_is_accepted() -> None:
    """A chart with one initial state and edges between declared states is created as given."""
    chart = _chart(Transition("go", ("a",), "b"), Transition("finish", ("b",), "done"))
    assert chart.state_names == ("a", "b", "done")
    assert chart.initial.name == "a"
    assert chart.triggers == ("go", "finish")


def test_the_standard_lifecycle_passes_validation() -> None:
    """The shipped lifecycle chart is itself a valid declaration with 'pending' as its start."""
    chart = lifecycle()
    assert chart.initial.name == "pending"
    assert set(chart.states_of(StateKind.FINAL)) == {"succeeded", "quarantined", "cancelled"}


def test_unknown_destination_state_is_refused_and_named() -> None:
    """A transition into an undeclared state raises ChartError naming that state and trigger."""
    with pytest.raises(ChartError) as info:
        _chart(Transition("go", ("a",), "nowhere"))
    message = str(info.value)
    assert "'nowhere'" in message
    assert "'go'" in message
    assert "tiny" in message


def test_unknown_source_state_is_refused_and_named() -> None:
    """A transition out of an undeclared state raises ChartError naming that state."""
    with pytest.raises(ChartError, match="'ghost'"):
        _chart(Transition("go", ("a", "ghost"), "b"))


def test_unknown_state_message_does_not_blame_known_states() -> None:
    """Only the undeclared names are listed as unknown, not the valid ones beside them."""
    with pytest.raises(ChartError) as info:
        _chart(Transition("go", ("a", "ghost"), "b"))
    unknown_part = str(info.value).split("unknown state(s)")[1].split(";")[0]
    assert "ghost" in unknown_part
    assert "'a'" not in unknown_part
    assert "'b'" not in unknown_part


def test_zero_initial_states_is_refused() -> None:
    """A chart without an initial state raises ChartError saying none was found."""
    states = (State("a", StateKind.WORK), State("done", StateKind.FINAL, success=True))
    with pytest.raises(ChartError, match=r"exactly one initial state, found 0"):
        _chart(Transition("go", ("a",), "done"), states=states)


def test_two_initial_states_are_refused_and_named() -> None:
    """A chart with two initial states raises ChartError listing both of them."""
    states = (
        State("a", StateKind.INITIAL),
        State("b", StateKind.INITIAL),
        State("done", StateKind.FINAL, success=True),
    )
    with pytest.raises(ChartError, match=r"exactly one initial state, found 2") as info:
        _chart(Transition("go", ("a", "b"), "done"), states=states)
    assert "'a'" in str(info.value)
    assert "'b'" in str(info.value)


def test_leaving_a_final_state_is_refused_without_operator() -> None:
    """An ordinary transition out of a final state raises ChartError naming the final state."""
    with pytest.raises(ChartError, match=r"leaves final state\(s\) \['done'\]"):
        _chart(Transition("reopen", ("done",), "a"))


def test_leaving_a_final_state_is_refused_even_among_other_sources() -> None:
    """A non-operator transition is refused if any one of its sources is final."""
    with pytest.raises(ChartError, match="'done'"):
        _chart(Transition("reset", ("b", "done"), "a"))


def test_operator_transition_may_leave_a_final_state() -> None:
    """Marking the transition operator=True makes leaving a final state legal."""
    chart = _chart(Transition("reopen", ("done",), "a", operator=True))
    assert chart.edge_exists("reopen", "done", "a")


def test_entering_a_final_state_needs_no_operator_flag() -> None:
    """Only leaving a final state is restricted; ordinary transitions may enter one."""
    chart = _chart(Transition("finish", ("b",), "done"))
    assert chart.edge_exists("finish", "b", "done")


def test_duplicate_state_names_are_refused_and_named() -> None:
    """Declaring the same state name twice raises ChartError naming the duplicate."""
    states = _states(State("b", StateKind.WAIT))
    with pytest.raises(ChartError, match=r"duplicate states \['b'\]"):
        _chart(states=states)


def test_duplicate_detection_sees_through_enum_members() -> None:
    """A StrEnum member and the equal plain string count as the same state name."""
    states = _states(State(_N.B, StateKind.WAIT))
    with pytest.raises(ChartError, match="duplicate"):
        _chart(states=states)


def test_transition_without_sources_is_refused() -> None:
    """A transition with an empty source tuple raises ChartError naming its trigger."""
    with pytest.raises(ChartError, match=r"'go'.*no source"):
        _chart(Transition("go", (), "b"))


def test_transition_without_trigger_is_refused() -> None:
    """A transition whose trigger is empty raises ChartError."""
    with pytest.raises(ChartError, match="no trigger"):
        _chart(Transition("", ("a",), "b"))


def test_chart_without_name_is_refused() -> None:
    """An empty chart name raises ChartError."""
    with pytest.raises(ChartError, match="name"):
        Chart(name="", states=_states(), transitions=())


def test_chart_error_is_a_value_error() -> None:
    """ChartError subclasses ValueError so generic callers can still catch it."""
    assert issubclass(ChartError, ValueError)


def test_enum_state_names_become_plain_strings() -> None:
    """A State given a StrEnum member stores a plain str equal to the member's value."""
    state = State(_N.A, StateKind.INITIAL)
    assert state.name == "a"
    assert type(state.name) is str


def test_enum_transition_names_become_plain_strings() -> None:
    """A Transition given StrEnum members stores plain str trigger, sources and dest."""
    transition = Transition(_N.GO, (_N.A, _N.B), _N.DONE)
    assert transition.trigger == "go"
    assert transition.sources == ("a", "b")
    assert transition.dest == "done"
    assert type(transition.trigger) is str
    assert all(type(source) is str for source in transition.sources)
    assert type(transition.dest) is str


def test_lifecycle_names_are_plain_strings() -> None:
    """Every state and transition name in the shipped lifecycle is a plain str, not an enum."""
    chart = lifecycle()
    assert all(type(state.name) is str for state in chart.states)
    for transition in chart.transitions:
        assert type(transition.trigger) is str
        assert type(transition.dest) is str
        assert all(type(source) is str for source in transition.sources)


def test_looking_up_an_unknown_state_raises_chart_error() -> None:
    """Chart.state for an undeclared name raises ChartError naming the chart and the state."""
    chart = _chart()
    with pytest.raises(ChartError, match=r"'tiny' has no state 'zzz'"):
        chart.state("zzz")


def test_state_kind_given_as_text_is_coerced_or_refused() -> None:
    """A kind spelled as text becomes a StateKind; an unknown kind is refused by name."""
    assert State("a", "initial").kind is StateKind.INITIAL  # type: ignore[arg-type]
    with pytest.raises(ChartError, match="'initil'"):
        State("a", "initil")  # type: ignore[arg-type]
