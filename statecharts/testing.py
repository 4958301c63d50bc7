"""Tests generated from a chart: exhaustive covering paths and a Hypothesis state machine.

Both explore the same abstract job: a configuration is (state, attempt, deadline passed,
held), where held means a handler holds the job's lease (a flow's step runs in the state it
waits in, so the state alone cannot tell).
Effects move the attempt counter as the engine does (START_ATTEMPT counts one, UNDO_ATTEMPT
gives it back, entering a step or requeueing resets it); in a polling state time may pass
its deadline. Guards are evaluated by the chart's shared Machine, so what is explored is
exactly what the engine would allow.

``covering_paths`` is a breadth-first search over every reachable configuration that yields
the shortest paths covering every declared transition (random exploration misses rare
edges). ``chart_machine`` turns the chart into a ``RuleBasedStateMachine``: one rule per
trigger with its guard as precondition, and the chart's invariants as ``@invariant``s.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from statecharts.chart import Chart, Effect, Facts, Transition
from statecharts.lifecycle import T
from statecharts.machine import CompiledChart, compile_chart
from statecharts.paths import Step, is_path

CREATED = "enqueue"  # the trigger of the first step: the job is created in the initial state
DEADLINE_PASSES = "(deadline passes)"  # not a chart trigger: time passing in a polling state
NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, order=True)
class Config:
    """What guards see of an abstract job."""

    state: str
    attempt: int = 0
    deadline_passed: bool = False
    held: bool = False


# What the engine fires on a job no handler holds; cancel works either way (a held job's
# handler is asked to stop); every other trigger is a held job's outcome or lease event.
UNHELD_TRIGGERS = frozenset({T.START, T.DEADLINE, T.ELAPSED, T.REQUEUE})
EITHER_TRIGGERS = frozenset({T.CANCEL})


Edge = tuple[str, str, str]  # (trigger, source, dest) of a declared transition


class Explorer:
    """A chart's abstract job: the enabled moves from a configuration and where they lead."""

    def __init__(self, chart: Chart, *, max_attempts: int = 2) -> None:
        self.chart = chart
        self.compiled: CompiledChart = compile_chart(chart)
        self.max_attempts = max_attempts

    @property
    def start(self) -> Config:
        return Config(self.chart.initial.name)

    def facts(self, config: Config) -> Facts:
        deadline = None
        if self.chart.state(config.state).polls:
            deadline = NOW + timedelta(seconds=-1 if config.deadline_passed else 1)
        return Facts(config.attempt, self.max_attempts, now=NOW, due_at=NOW, deadline=deadline)

    def fire(self, config: Config, trigger: str) -> Transition | None:
        return self.compiled.fire(config.state, trigger, self.facts(config))

    def moves(self, config: Config) -> Iterator[tuple[Step, Config]]:
        """Every enabled move from ``config``: one per trigger, plus time passing."""
        for trigger in self.chart.triggers:
            if trigger not in EITHER_TRIGGERS and (trigger in UNHELD_TRIGGERS) == config.held:
                continue
            transition = self.fire(config, trigger)
            if transition is not None:
                yield Step(trigger, config.state, transition.dest), self.apply(config, transition)
        if self.chart.state(config.state).polls and not config.deadline_passed:
            yield (
                Step(DEADLINE_PASSES, config.state, config.state),
                Config(config.state, config.attempt, True, config.held),
            )

    def apply(self, config: Config, transition: Transition) -> Config:
        """The configuration after ``transition``, by its effects on the persisted columns."""
        attempt = config.attempt
        effects = transition.effects
        if Effect.START_ATTEMPT in effects:
            attempt += 1
        if Effect.UNDO_ATTEMPT in effects:
            attempt = max(attempt - 1, 0)
        resets = (Effect.ENTER_STEP, Effect.RESET_ATTEMPTS, Effect.SCHEDULE_POLL)
        if any(e in effects for e in resets):
            attempt = 0
        passed = config.deadline_passed
        if Effect.ENTER_STEP in effects or Effect.RESET_ATTEMPTS in effects:
            passed = False  # a new state, a new deadline
        if not self.chart.state(transition.dest).polls:
            passed = False
        held = config.held
        if Effect.START_ATTEMPT in effects:
            held = True
        if Effect.RELEASE_LEASE in effects:
            held = False
        return Config(transition.dest, attempt, passed, held)


def declared_edges(chart: Chart) -> set[Edge]:
    return {(t.trigger, s, t.dest) for t in chart.transitions for s in t.sources}


def covering_paths(chart: Chart, *, max_attempts: int = 2) -> list[list[Step]]:
    """Shortest paths from job creation that together take every reachable transition.

    Breadth-first over (state, attempt, deadline passed): for each declared edge, the path
    to the first configuration where it is enabled, then the edge. Paths that are prefixes
    of longer ones are dropped. Deterministic: same chart, same paths.
    """
    explorer = Explorer(chart, max_attempts=max_attempts)
    first = explorer.start
    parent: dict[Config, tuple[Config, Step] | None] = {first: None}
    queue = deque([first])
    wanted: dict[Edge, list[Step]] = {}
    while queue:
        config = queue.popleft()
        for step, after in explorer.moves(config):
            edge = (step.trigger, step.source or "", step.dest)
            if step.trigger != DEADLINE_PASSES and edge not in wanted:
                wanted[edge] = [*_path_to(parent, config), step]
            if after not in parent:
                parent[after] = (config, step)
                queue.append(after)
    created = Step(CREATED, None, chart.initial.name)
    paths = sorted(([created, *p] for p in wanted.values()), key=_sort_key)
    return [p for p in paths if not any(_is_prefix(p, q) for q in paths if q is not p)]


def uncovered(chart: Chart, paths: list[list[Step]]) -> set[Edge]:
    """Declared transitions no path takes (unreachable ones, or paths gone stale)."""
    taken = {(s.trigger, s.source or "", s.dest) for p in paths for s in p}
    return declared_edges(chart) - taken


def _path_to(parent: dict[Config, tuple[Config, Step] | None], config: Config) -> list[Step]:
    steps: list[Step] = []
    link = parent[config]
    while link is not None:
        before, step = link
        steps.append(step)
        link = parent[before]
    return steps[::-1]


def _sort_key(path: list[Step]) -> tuple[int, list[tuple[str, str, str]]]:
    return (len(path), [(s.trigger, s.source or "", s.dest) for s in path])


def _is_prefix(short: list[Step], long: list[Step]) -> bool:
    return len(short) < len(long) and long[: len(short)] == short


def recorded(path: list[Step]) -> list[Step]:
    """The steps a job's history records (time passing is not an event)."""
    return [s for s in path if s.trigger != DEADLINE_PASSES]


def chart_machine(chart: Chart, *, max_attempts: int = 2) -> Any:
    """A Hypothesis ``RuleBasedStateMachine`` class exploring ``chart`` at random.

    One rule per trigger, its guard as the precondition, fired through the chart's shared
    Machine; invariants: the attempt never exceeds max_attempts, only operator transitions
    leave a final state, every move is a declared transition, and the history so far is a
    valid path. Run it with ``TestChart = chart_machine(chart).TestCase``.
    """
    from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

    explorer = Explorer(chart, max_attempts=max_attempts)

    def init(self: Any) -> None:
        RuleBasedStateMachine.__init__(self)
        self.config = explorer.start
        self.history = [Step(CREATED, None, chart.initial.name)]

    def take(self: Any, step: Step, after: Config) -> None:
        before = chart.state(self.config.state)
        if step.trigger != DEADLINE_PASSES:
            transition = explorer.fire(self.config, step.trigger)
            assert transition is not None
            assert not before.is_final or transition.operator, (
                f"{step.trigger} left final state {before.name!r}"
            )
            assert chart.edge_exists(step.trigger, before.name, step.dest)
            self.history.append(step)
        self.config = after

    def rule_for(trigger: str, name: str) -> Any:
        def enabled(self: Any) -> bool:
            return any(step.trigger == trigger for step, _ in explorer.moves(self.config))

        def fire(self: Any) -> None:
            step, after = next(
                (s, a) for s, a in explorer.moves(self.config) if s.trigger == trigger
            )
            take(self, step, after)

        # Hypothesis tells rules apart by name: each trigger's rule gets its own.
        fire.__name__ = fire.__qualname__ = name
        return precondition(enabled)(rule()(fire))

    def finished(self: Any) -> bool:
        return not any(True for _ in explorer.moves(self.config))

    @precondition(finished)
    @rule()
    def stay_final(self: Any) -> None:
        """Nothing leaves this state (a final one): Hypothesis needs a rule it can run."""
        assert chart.state(self.config.state).is_final, f"stuck in {self.config}"

    namespace: dict[str, Any] = {"__init__": init, "stay_final": stay_final}
    for index, trigger in enumerate([*chart.triggers, DEADLINE_PASSES]):
        # Numbered: two triggers may spell the same identifier (on-hold, on_hold).
        name = f"fire_{index}_{_identifier(trigger)}"
        namespace[name] = rule_for(trigger, name)

    @invariant()
    def attempts_bounded(self: Any) -> None:
        assert 0 <= self.config.attempt <= max_attempts, self.config

    @invariant()
    def history_is_a_path(self: Any) -> None:
        assert is_path(chart, self.history), self.history

    namespace["attempts_bounded"] = attempts_bounded
    namespace["history_is_a_path"] = history_is_a_path
    name = f"ChartMachine_{_identifier(chart.name)}"
    return type(name, (RuleBasedStateMachine,), namespace)


def _identifier(text: str) -> str:
    return re.sub(r"\W+", "_", text).strip("_") or "x"
