"""Static checks of a chart: reachable, terminating, bounded, deterministic.

Guards are predicates in Python, so a check that needs guard semantics evaluates them on a
grid of sample facts (attempt counts around the bound, deadline passed or not, due or not,
an error or none). An edge is *enabled* when some sample lets all its guards pass.

A check can be waived per chart only with a written reason (``Chart.waivers``); ``jobcharts
check`` prints the reason wherever a waiver applies.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from statecharts.chart import Chart, Effect, Facts, StateKind, Transition

CHECKS = (
    "reachable",
    "terminates",
    "absorbing",
    "bounded_cycles",
    "wait_exits",
    "not_shadowed",
    "deterministic",
    "migrations",
)

_NOW = datetime(2026, 1, 1, tzinfo=UTC)
_RENEWING = (Effect.ENTER_STEP, Effect.RESET_ATTEMPTS)


def sample_facts() -> list[Facts]:
    """The grid of facts guards are evaluated on."""
    samples = []
    for max_attempts, attempt in itertools.product((1, 3), (0, 1, 2, 3)):
        if attempt > max_attempts:
            continue
        for due_delta, deadline_delta, error in itertools.product(
            (-1, 1), (None, -1, 1), (None, "Error")
        ):
            samples.append(
                Facts(
                    attempt=attempt,
                    max_attempts=max_attempts,
                    now=_NOW,
                    due_at=_NOW + timedelta(seconds=due_delta),
                    deadline=None
                    if deadline_delta is None
                    else _NOW + timedelta(seconds=deadline_delta),
                    error_class=error,
                )
            )
    return samples


@dataclass(frozen=True)
class Finding:
    """One check's verdict on one chart."""

    check: str
    ok: bool
    message: str
    waived: str | None = None  # the written reason, when a failing check is waived

    @property
    def passes(self) -> bool:
        return self.ok or self.waived is not None


def check_chart(chart: Chart) -> list[Finding]:
    """Run every check on ``chart``; waivers turn failures into waived findings."""
    samples = sample_facts()
    results: list[Finding] = []
    runners: dict[str, Callable[[Chart, list[Facts]], list[str]]] = {
        "reachable": _reachable,
        "terminates": _terminates,
        "absorbing": _absorbing,
        "bounded_cycles": _bounded_cycles,
        "wait_exits": _wait_exits,
        "not_shadowed": _not_shadowed,
        "deterministic": _deterministic,
        "migrations": _migrations,
    }
    waivers = {w.check: w for w in chart.waivers}
    for name in CHECKS:
        problems = runners[name](chart, samples)
        if not problems:
            results.append(Finding(name, True, "ok"))
            continue
        waiver = waivers.get(name)
        if waiver is not None and waiver.triggers:
            # A scoped waiver: the check must pass once the waived edges are left out.
            rest = _without(chart, waiver.triggers)
            if runners[name](rest, samples):
                results.append(Finding(name, False, "; ".join(runners[name](rest, samples))))
                continue
        reason = None if waiver is None else waiver.reason
        results.append(Finding(name, False, "; ".join(problems), reason))
    return results


def _without(chart: Chart, triggers: tuple[str, ...]) -> Chart:
    """``chart`` without the edges of ``triggers`` (and without waivers, to check again)."""
    return replace(
        chart,
        transitions=tuple(t for t in chart.transitions if t.trigger not in triggers),
        waivers=(),
    )


def failures(chart: Chart) -> list[Finding]:
    """The findings that fail and are not waived."""
    return [f for f in check_chart(chart) if not f.passes]


# -- the checks ----------------------------------------------------------------------------


def _enabled(transition: Transition, samples: Iterable[Facts]) -> bool:
    return any(transition.allowed(facts) for facts in samples)


def _edges(chart: Chart, samples: list[Facts], operator: bool = False) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {s.name: set() for s in chart.states}
    for transition in chart.transitions:
        if transition.operator and not operator:
            continue
        if not _enabled(transition, samples):
            continue
        for source in transition.sources:
            graph[source].add(transition.dest)
    return graph


def _closure(graph: dict[str, set[str]], start: Iterable[str]) -> set[str]:
    seen, stack = set(start), list(start)
    while stack:
        for nxt in graph[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _reachable(chart: Chart, samples: list[Facts]) -> list[str]:
    reached = _closure(_edges(chart, samples, operator=True), [chart.initial.name])
    missing = [s.name for s in chart.states if s.name not in reached]
    return [f"not reachable from {chart.initial.name!r}: {missing}"] if missing else []


def _terminates(chart: Chart, samples: list[Facts]) -> list[str]:
    graph = _edges(chart, samples)
    finals = set(chart.states_of(StateKind.FINAL))
    stuck = [
        s.name
        for s in chart.states
        if s.kind is not StateKind.FINAL and not (_closure(graph, [s.name]) & finals)
    ]
    return [f"can never reach a final state from {stuck}"] if stuck else []


def _absorbing(chart: Chart, _samples: list[Facts]) -> list[str]:
    leaks = [
        f"{t.trigger} leaves {s}"
        for t in chart.transitions
        if not t.operator
        for s in t.sources
        if chart.state(s).is_final
    ]
    return [f"final states are left by {leaks}"] if leaks else []


def _bounded_cycles(chart: Chart, samples: list[Facts]) -> list[str]:
    """Every cycle must pass a guard on the attempt counter (increased around the cycle by
    a START_ATTEMPT effect) or on a deadline, on an edge that does not reset them (entering
    a step does); cycles through operator actions don't count."""
    counting = any(Effect.START_ATTEMPT in t.effects for t in chart.transitions)
    unbounded: dict[str, set[str]] = {s.name: set() for s in chart.states}
    for transition in chart.transitions:
        if transition.operator or not _enabled(transition, samples):
            continue
        bounds = {g.bounds for g in transition.guards}
        # An edge that enters a step resets the attempt counter and sets a new deadline:
        # a cycle through it starts over, so its guard bounds nothing.
        renews = any(e in transition.effects for e in _RENEWING)
        if not renews and ("deadline" in bounds or ("attempt" in bounds and counting)):
            continue  # this edge is where a cycle runs out
        for source in transition.sources:
            unbounded[source].add(transition.dest)
    cycles = _cycles(unbounded)
    return [f"unbounded cycle {' -> '.join([*c, c[0]])}" for c in cycles]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one (sorted, for stable output)."""
    found = []
    for component in _components(graph):
        nodes = sorted(component)
        if len(nodes) == 1 and nodes[0] not in graph[nodes[0]]:
            continue
        path = [nodes[0]]
        while True:  # walk inside the component until a node repeats
            nxt = sorted(n for n in graph[path[-1]] if n in component)[0]
            if nxt in path:
                found.append(path[path.index(nxt) :])
                break
            path.append(nxt)
    return found


def _components(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            result.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return result


def _wait_exits(chart: Chart, _samples: list[Facts]) -> list[str]:
    """A wait state must be left by time: claimed when due, or by a deadline guard."""
    missing = []
    for state in chart.states_of(StateKind.WAIT):
        leaving = [t for t in chart.transitions if state in t.sources and not t.operator]
        timed = any(
            t.trigger == "start"
            or any(g.bounds == "deadline" or "due_at" in g.name for g in t.guards)
            for t in leaving
        )
        if not timed:
            missing.append(state)
    return [f"wait state(s) {missing} have no time-based exit"] if missing else []


def _not_shadowed(chart: Chart, _samples: list[Facts]) -> list[str]:
    problems = []
    for later_index, later in enumerate(chart.transitions):
        for earlier in chart.transitions[:later_index]:
            common = set(earlier.sources) & set(later.sources)
            if earlier.trigger == later.trigger and common and not earlier.guards:
                problems.append(
                    f"{later.trigger} -> {later.dest} from {sorted(common)} is shadowed by the "
                    f"unguarded {earlier.trigger} -> {earlier.dest} declared before it"
                )
    return problems


def _deterministic(chart: Chart, samples: list[Facts]) -> list[str]:
    problems = set()
    for source in chart.state_names:
        for trigger in chart.triggers:
            candidates = chart.transitions_for(trigger, source)
            if len(candidates) < 2 or not candidates[0].guards:
                continue  # one candidate, or shadowing (reported by not_shadowed)
            for facts in samples:
                enabled = [t for t in candidates if t.allowed(facts)]
                if len(enabled) > 1:
                    dests = " and ".join(t.dest for t in enabled)
                    problems.add(
                        f"{trigger} from {source!r} can go to {dests} at once "
                        f"(e.g. attempt {facts.attempt} of {facts.max_attempts})"
                    )
                    break
    return sorted(problems)


def _migrations(chart: Chart, _samples: list[Facts]) -> list[str]:
    """A migrated job must land where jobs wait to be picked up: a state a claim starts
    or a timer leaves (due at once, or at its timer), or a final state. (That its states
    exist is checked when the chart is declared.)"""
    waiting = {
        s
        for t in chart.transitions
        if t.trigger in ("start", "deadline", "elapsed")
        for s in t.sources
    }
    return [
        f"migration {m.old!r} -> {m.new!r} lands where no job waits ({m.new!r} is entered "
        f"only by a claim); map it to a state jobs wait in: {sorted(waiting)} or a final state"
        for m in chart.migrations
        if m.new not in waiting and not chart.state(m.new).is_final
    ]
