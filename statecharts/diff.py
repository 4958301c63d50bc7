"""What a change does to a chart: added, removed and changed states and transitions, and
the migrations that carry jobs across, as one diagram (DOT, Mermaid) and a summary list
(Markdown with a Mermaid block, ready for a pull-request comment). The engine's plumbing
(every step's claim, retry, release, exhaustion into quarantine, plain cancel) is left
out unless it changed between states both versions have: an added or removed step's
mark says it all.

Marks read in grey too: ``+`` added, ``-`` removed, ``~`` changed, ``->`` a migration; the
colours (green, red, amber, blue dashed) only repeat them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from statecharts.chart import Chart, State, Transition

MARK = {"added": "+", "removed": "-", "changed": "~", "same": ""}
COLOUR = {"added": "#15803d", "removed": "#b91c1c", "changed": "#b45309", "same": "#374151"}
FILL = {"added": "#dcfce7", "removed": "#fee2e2", "changed": "#fef3c7", "same": "#ffffff"}

Edge = tuple[str, str, str]  # (trigger, source, dest)


@dataclass(frozen=True)
class ChartDiff:
    """Two versions of one chart, compared."""

    old: Chart
    new: Chart
    states: dict[str, str]  # state -> added | removed | changed | same
    edges: dict[Edge, str]  # (trigger, source, dest) -> added | removed | changed | same
    migrations: list[tuple[str, str]] = field(default_factory=list)  # (old state, new state)
    in_flight: Mapping[str, int] = field(default_factory=dict)  # old state -> jobs in it
    policies: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # state -> (was, is)

    @property
    def changed(self) -> bool:
        return any(v != "same" for v in (*self.states.values(), *self.edges.values())) or bool(
            self.migrations
        )

    def summary(self) -> list[str]:
        """One line per difference, marked, in a stable order."""
        lines = []
        for name, status in sorted(self.states.items()):
            if status != "same":
                jobs = self.in_flight.get(name, 0)
                flying = f" ({jobs} job(s) in flight)" if jobs else ""
                lines.append(f"{MARK[status]} state {name}{_state_change(self, name)}{flying}")
        for (trigger, source, dest), status in sorted(self.edges.items()):
            if status != "same" and shown(self, (trigger, source, dest)):
                lines.append(f"{MARK[status]} {source} --{trigger}--> {dest}")
        for old, new in self.migrations:
            jobs = self.in_flight.get(old, 0)
            flying = f" ({jobs} job(s) in flight)" if jobs else ""
            lines.append(f"-> migrate {old} => {new}{flying}")
        return lines


def diff_charts(
    old: Chart,
    new: Chart,
    in_flight: Mapping[str, int] | None = None,
    policies: tuple[Mapping[str, str], Mapping[str, str]] | None = None,
) -> ChartDiff:
    """Compare ``old`` with ``new`` (``in_flight``: jobs per state of the old version;
    ``policies``: each version's retry policy and timeout per state, as text, when the
    apps are at hand: a chart alone does not carry them)."""
    before = {s.name: s for s in old.states}
    after = {s.name: s for s in new.states}
    states: dict[str, str] = {}
    for name in before.keys() | after.keys():
        if name not in after:
            states[name] = "removed"
        elif name not in before:
            states[name] = "added"
        else:
            states[name] = "same" if _same_state(before[name], after[name]) else "changed"
    old_edges, new_edges = _edges(old), _edges(new)
    edges: dict[Edge, str] = {}
    for edge in old_edges.keys() | new_edges.keys():
        if edge not in new_edges:
            edges[edge] = "removed"
        elif edge not in old_edges:
            edges[edge] = "added"
        else:
            edges[edge] = "same" if old_edges[edge] == new_edges[edge] else "changed"
    migrations = [(m.old, m.new) for m in new.migrations if m.old in before]
    changed_policies: dict[str, tuple[str, str]] = {}
    if policies is not None:
        was, now = policies
        for name, status in list(states.items()):
            kept = status in ("same", "changed") and name in was and name in now
            if kept and was[name] != now[name]:
                changed_policies[name] = (was[name], now[name])
                states[name] = "changed"
    return ChartDiff(old, new, states, edges, migrations, dict(in_flight or {}), changed_policies)


PLUMBING_LOOPS = frozenset({"start", "release", "wait", "fail", "expire"})
EXHAUSTION = frozenset({"fail", "expire", "fail_permanent"})


def plumbing(edge: Edge) -> bool:
    """An edge every step has, which the engine fires itself: a claim, a retry, a release,
    a poll's "not yet", exhaustion into quarantine, a plain cancel, the operator's requeue.
    A review shows it only when it changed between states both versions have."""
    trigger, source, dest = edge
    return (
        (trigger in PLUMBING_LOOPS and source == dest)
        or (trigger in EXHAUSTION and dest == "quarantined")
        or (trigger == "cancel" and dest == "cancelled")
        or trigger == "requeue"
    )


def shown(diff: ChartDiff, edge: Edge) -> bool:
    """Whether a review draws and lists ``edge`` (business edges always; plumbing only when
    it changed between two states that both versions have)."""
    if not plumbing(edge):
        return True
    _, source, dest = edge
    both = all(diff.states.get(s) in ("same", "changed") for s in (source, dest))
    return diff.edges[edge] != "same" and both


def _same_state(a: State, b: State) -> bool:
    return (a.kind, a.success, a.every, a.deadline, a.delay) == (
        b.kind,
        b.success,
        b.every,
        b.deadline,
        b.delay,
    )


def _state_change(diff: ChartDiff, name: str) -> str:
    if diff.states.get(name) != "changed":
        return ""
    a, b = diff.old.state(name), diff.new.state(name)
    parts = [
        f"{attr} {getattr(a, attr)} -> {getattr(b, attr)}"
        for attr in ("kind", "every", "deadline", "delay")
        if getattr(a, attr) != getattr(b, attr)
    ]
    if name in diff.policies:
        was, now = diff.policies[name]
        parts.append(f"retries {was} -> {now}")
    return f" ({', '.join(str(p) for p in parts)})"


def _edges(chart: Chart) -> dict[Edge, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Each (trigger, source, dest) with its guards and effects (what a change compares)."""
    found: dict[Edge, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    for t in chart.transitions:
        for source in t.sources:
            found[(t.trigger, source, t.dest)] = _shape(t)
    return found


def _shape(t: Transition) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(g.name for g in t.guards), tuple(str(e) for e in t.effects)


# -- drawing ---------------------------------------------------------------------------------


def to_dot(diff: ChartDiff) -> str:
    """Graphviz DOT of the diff: both versions' states and edges in one picture."""
    lines = [
        f'digraph "{_esc(diff.new.name)} diff" {{',
        '  rankdir=LR; fontname="Helvetica"; labelloc="t";',
        f'  label="{_esc(diff.new.name)}: what the change does (+ added, - removed, ~ changed, '
        '-> migration)";',
        '  node [fontname="Helvetica", shape=box, style="rounded,filled"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for name, status in sorted(diff.states.items()):
        mark = MARK[status]
        jobs = diff.in_flight.get(name, 0)
        parts = [f"{mark} {name}".strip(), *([f"({jobs} in flight)"] if jobs else [])]
        label = "\\n".join(_esc(p) for p in parts)
        style = ' style="rounded,filled,dashed"' if status == "removed" else ""
        lines.append(
            f'  "{_esc(name)}" [label="{label}", color="{COLOUR[status]}", '
            f'fillcolor="{FILL[status]}"{style}];'
        )
    for (trigger, source, dest), status in sorted(diff.edges.items()):
        if not shown(diff, (trigger, source, dest)):
            continue  # the engine's plumbing, unchanged or explained by its state's mark
        label = f"{MARK[status]} {trigger}".strip()
        style = ', style="dashed"' if status == "removed" else ""
        lines.append(
            f'  "{_esc(source)}" -> "{_esc(dest)}" [label="{_esc(label)}", '
            f'color="{COLOUR[status]}", fontcolor="{COLOUR[status]}"{style}];'
        )
    for old, new in diff.migrations:
        lines.append(
            f'  "{_esc(old)}" -> "{_esc(new)}" [label="-> migrate", color="#1d4ed8", '
            'fontcolor="#1d4ed8", style="dashed", penwidth=2];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def to_mermaid(diff: ChartDiff) -> str:
    """A Mermaid flowchart of the diff (marks in the text, colours by class)."""
    ids = {
        name: f"s{i}_{re.sub(r'[^0-9A-Za-z_]', '_', name)}"
        for i, name in enumerate(sorted(diff.states))
    }
    lines = ["flowchart LR"]
    for name, status in sorted(diff.states.items()):
        jobs = diff.in_flight.get(name, 0)
        text = f"{MARK[status]} {name}".strip() + (f" ({jobs} in flight)" if jobs else "")
        lines.append(f'  {ids[name]}["{_mm(text)}"]:::{status}')
    for (trigger, source, dest), status in sorted(diff.edges.items()):
        if not shown(diff, (trigger, source, dest)):
            continue
        arrow = "-.->" if status == "removed" else "-->"
        label = f"{MARK[status]} {trigger}".strip()
        lines.append(f'  {ids[source]} {arrow}|"{_mm(label)}"| {ids[dest]}')
    for old, new in diff.migrations:
        lines.append(f'  {ids[old]} ==>|"-> migrate"| {ids[new]}')
    for status in ("added", "removed", "changed", "same"):
        lines.append(
            f"  classDef {status} fill:{FILL[status]},stroke:{COLOUR[status]},"
            f"color:{COLOUR[status]}"
        )
    return "\n".join(lines) + "\n"


def to_markdown(diff: ChartDiff, title: str | None = None) -> str:
    """A pull-request comment: the summary list and the Mermaid diagram."""
    head = title or f"Chart `{diff.new.name}`"
    if not diff.changed:
        return f"### {head}: no change\n"
    items = "\n".join(f"- `{line}`" for line in diff.summary())
    return f"### {head}\n\n{items}\n\n```mermaid\n{to_mermaid(diff)}```\n"


def _esc(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _mm(text: str) -> str:
    return text.replace('"', "#quot;")
