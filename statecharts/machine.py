"""Compile a chart to ONE shared ``transitions.Machine`` (the only module importing it).

Jobs are never added to the machine as models: ``add_model`` on a long-lived machine slows
down as models pile up, and a Machine per job costs about ten times a reused one. Instead
each ``fire`` call hands the machine's event API a throwaway probe carrying the job's state;
the machine evaluates the guards in declaration order and reports the transition it took.
"""

from __future__ import annotations

from typing import Any

from transitions import Machine

from statecharts.chart import Chart, ChartError, Facts, Transition


class _Probe:
    """The model the shared machine moves for one call: a state and the edge taken."""

    __slots__ = ("state", "taken")

    def __init__(self, state: str) -> None:
        self.state = state
        self.taken: Transition | None = None


def _guard_condition(transition: Transition, index: int) -> Any:
    guard = transition.guards[index]

    def condition(event: Any) -> bool:
        facts: Facts = event.kwargs["facts"]
        return guard(facts)

    return condition


def _recorder(transition: Transition) -> Any:
    def record(event: Any) -> None:
        event.model.taken = transition

    return record


class CompiledChart:
    """A chart plus its one shared Machine; safe to reuse for every job of the chart."""

    def __init__(self, chart: Chart) -> None:
        self.chart = chart
        self._states = frozenset(chart.state_names)
        specs = []
        for transition in chart.transitions:
            specs.append(
                {
                    "trigger": transition.trigger,
                    "source": list(transition.sources),
                    "dest": transition.dest,
                    "conditions": [
                        _guard_condition(transition, i) for i in range(len(transition.guards))
                    ],
                    "after": [_recorder(transition)],
                }
            )
        self.machine = Machine(
            model=None,
            states=list(chart.state_names),
            transitions=specs,
            initial=chart.initial.name,
            auto_transitions=False,
            send_event=True,
            ignore_invalid_triggers=True,
            name=chart.name,
        )
        # The machine's decision depends on the facts only through its candidates' guards
        # (pure predicates, evaluated in declaration order). So it is asked once per
        # (state, trigger, which candidates pass) and remembered: every claim and outcome
        # would otherwise pay a trip through the library's event machinery.
        self._candidates: dict[tuple[str, str], tuple[Transition, ...]] = {}
        for transition in chart.transitions:
            for source in transition.sources:
                key = (source, transition.trigger)
                self._candidates[key] = (*self._candidates.get(key, ()), transition)
        self._decided: dict[tuple[str, str, tuple[bool, ...]], Transition | None] = {}

    def fire(self, state: str, trigger: str, facts: Facts) -> Transition | None:
        """The transition ``trigger`` takes from ``state`` under ``facts``, or None.

        None means no declared transition is enabled: the trigger is unknown in that state
        or every candidate's guard failed. Nothing is persisted here.
        """
        state, trigger = str(state), str(trigger)  # StrEnum members: looked up by name
        if state not in self._states:
            raise ChartError(f"chart {self.chart.name!r} has no state {state!r}")
        candidates = self._candidates.get((state, trigger))
        if not candidates:
            return None  # no edge for it here (asking the library would log a warning)
        passes = tuple(all(guard(facts) for guard in t.guards) for t in candidates)
        key = (state, trigger, passes)
        if key in self._decided:
            return self._decided[key]
        probe = _Probe(state)
        self.machine.events[trigger].trigger(probe, facts=facts)
        self._decided[key] = probe.taken
        return probe.taken

    def require(self, state: str, trigger: str, facts: Facts) -> Transition:
        """Like ``fire`` but a disabled transition is an error naming the chart and state."""
        taken = self.fire(state, trigger, facts)
        if taken is None:
            raise ChartError(
                f"chart {self.chart.name!r}: no transition {trigger!r} is enabled from "
                f"state {state!r}"
            )
        return taken


def compile_chart(chart: Chart) -> CompiledChart:
    """Compile ``chart``; callers keep the result and share it for every job of the chart."""
    return CompiledChart(chart)


def bare_machine(**kwargs: Any) -> Machine:
    """A plain ``transitions.Machine`` (``statecharts.bench`` times it against the shared
    one): the one module that imports ``transitions`` hands it out."""
    return Machine(**kwargs)
