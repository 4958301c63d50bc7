"""Chart versions: a stable hash of a chart's structure, and the structure as JSON.

A deploy that renames a state or drops a transition changes the version; a changed
description, a waiver or a migration does not (they say how to run or read the chart, not
what its jobs can do). The database keeps the markup of every version it has seen, so a
job is drawn and checked on the chart it ran under, and a deploy can be compared with the
jobs in flight (``engine.deploys``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from statecharts.chart import Chart, Effect, Guard, State, StateKind, Transition

VERSION_LENGTH = 12  # hex digits: 48 bits, plenty for the versions of one chart


def chart_markup(chart: Chart) -> dict[str, Any]:
    """The structure of ``chart`` as plain JSON: states with their kinds and timers,
    transitions with their triggers, sources, destinations, guard names and effects."""
    return {
        "name": chart.name,
        "states": [
            {
                "name": s.name,
                "kind": s.kind.value,
                "success": s.success,
                "every": s.every,
                "deadline": s.deadline,
                "delay": s.delay,
            }
            for s in chart.states
        ],
        "transitions": [
            {
                "trigger": t.trigger,
                "sources": list(t.sources),
                "dest": t.dest,
                "guards": [[g.name, g.bounds] for g in t.guards],
                "effects": [e.value for e in t.effects],
                "operator": t.operator,
            }
            for t in chart.transitions
        ],
    }


def version_of(chart: Chart) -> str:
    """The chart's version: the first hex digits of the SHA-256 of its markup."""
    text = json.dumps(chart_markup(chart), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:VERSION_LENGTH]


def chart_from_markup(markup: dict[str, Any], label: str = "") -> Chart:
    """Rebuild a recorded version for drawing and checking (its guards keep their names;
    they are never evaluated: a recorded chart is not run)."""
    states = tuple(
        State(
            s["name"],
            StateKind(s["kind"]),
            success=s.get("success"),
            every=s.get("every"),
            deadline=s.get("deadline"),
            delay=s.get("delay"),
        )
        for s in markup["states"]
    )
    transitions = tuple(
        Transition(
            t["trigger"],
            tuple(t["sources"]),
            t["dest"],
            tuple(Guard(name, _recorded_guard, bounds) for name, bounds in t["guards"]),
            tuple(Effect(e) for e in t["effects"]),
            operator=bool(t.get("operator")),
        )
        for t in markup["transitions"]
    )
    return Chart(markup["name"], states, transitions, label=label)


def _recorded_guard(_facts: Any) -> bool:
    raise RuntimeError("a recorded chart version is drawn and checked, never run")
