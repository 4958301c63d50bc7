"""Diagrams of a chart for review: Graphviz DOT (and SVG/PNG), Mermaid, a Markdown table.

All three are generated from the same chart the engine runs, and are deterministic (same
chart, same bytes) so they can be committed and checked for staleness in CI.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import graphviz

from statecharts.chart import Chart, State, StateKind, Transition

FORMATS = ("dot", "svg", "png", "mermaid", "md")

# Styling by what a state means: where jobs start, where handlers run, where they wait,
# and the two kinds of end.
_STYLE = {
    "initial": {"shape": "oval", "style": "bold"},
    "work": {"shape": "box", "style": "rounded,filled", "fillcolor": "#dbeafe"},
    "wait": {"shape": "box", "style": "rounded,dashed"},
    "success": {"shape": "doublecircle", "style": "filled", "fillcolor": "#dcfce7"},
    "failure": {"shape": "doublecircle", "style": "filled", "fillcolor": "#fee2e2"},
}


@dataclass(frozen=True)
class Overlay:
    """Live figures to draw on a chart (``render --live``), read by the engine from its
    tables: jobs per state and the age of each state's oldest, transitions per edge."""

    jobs: Mapping[str, int] = field(default_factory=dict)
    oldest: Mapping[str, timedelta] = field(default_factory=dict)
    taken: Mapping[tuple[str, str, str], int] = field(default_factory=dict)  # (trigger, src, dst)
    window: timedelta = timedelta(hours=1)
    caption: str | None = None  # what the figures are, when not a live window (one job)

    def state_note(self, state: State) -> str:
        count = self.jobs.get(state.name, 0)
        if not count:
            return ""
        note = f"{count} job" + ("" if count == 1 else "s")
        age = self.oldest.get(state.name)
        if age is not None and not state.is_final:
            note += f", oldest {_span(max(age.total_seconds(), 0.0))}"
        return note

    def count(self, source: str, dest: str) -> int:
        """Transitions from ``source`` to ``dest`` in the window, whatever their trigger."""
        return sum(n for (_, src, dst), n in self.taken.items() if (src, dst) == (source, dest))

    def edge_label(self, source: str, transition: Transition) -> str:
        count = self.taken.get((transition.trigger, source, transition.dest), 0)
        label = edge_label(transition)
        return f"{label} x{count}" if count else label


class RenderError(RuntimeError):
    """A diagram that cannot be produced here (for example Graphviz's ``dot`` is missing)."""


def style_of(state: State) -> str:
    if state.kind is StateKind.FINAL:
        return "success" if state.success else "failure"
    return state.kind.value


def edge_label(transition: Transition) -> str:
    """``trigger [guard, ...]``: what a reviewer needs to read on an edge."""
    guards = ", ".join(g.name for g in transition.guards)
    return f"{transition.trigger} [{guards}]" if guards else transition.trigger


def _edges(chart: Chart) -> list[tuple[str, Transition]]:
    """Every (source, transition), in declaration order."""
    return [(source, t) for t in chart.transitions for source in t.sources]


def merged_edges(
    chart: Chart, overlay: Overlay | None = None
) -> list[tuple[str, str, bool, list[str]]]:
    """(source, dest, operator, labels): parallel edges drawn as one, labels stacked, in
    order of first declaration, so a step's retry loops read as one arrow."""
    merged: dict[tuple[str, str, bool], list[str]] = {}
    for source, transition in _edges(chart):
        key = (source, transition.dest, transition.operator)
        label = overlay.edge_label(source, transition) if overlay else edge_label(transition)
        merged.setdefault(key, []).append(label)
    return [(src, dest, op, labels) for (src, dest, op), labels in merged.items()]


def _notes(state: State, overlay: Overlay | None) -> list[str]:
    """What a state's box says besides its name: its timers, live figures."""
    notes = [timers(state)] if timers(state) else []
    if overlay is not None and overlay.state_note(state):
        notes.append(overlay.state_note(state))
    return notes


def timers(state: State) -> str:
    """A state's timers in words (empty when it has none)."""
    if state.every is not None:
        return f"every {_span(state.every)}, deadline {_span(state.deadline or 0)}"
    if state.delay is not None:
        return f"after {_span(state.delay)}"
    return ""


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def to_dot(chart: Chart, overlay: Overlay | None = None) -> str:
    """Graphviz DOT source (needs no binary); ``overlay`` adds live figures."""
    graph = graphviz.Digraph(chart.name, comment=chart.description or None)
    title = chart.name
    if overlay is not None and overlay.caption:
        title += f" ({overlay.caption})"
    elif overlay is not None:
        title += f" (live: transitions in the last {_span(overlay.window.total_seconds())})"
    graph.attr(rankdir="LR", fontname="Helvetica", label=title, labelloc="t")
    graph.attr("node", fontname="Helvetica")
    graph.attr("edge", fontname="Helvetica", fontsize="10")
    for state in chart.states:
        notes = _notes(state, overlay)
        extra = {"label": "\\n".join([state.name, *(f"({n})" for n in notes)])} if notes else {}
        graph.node(state.name, **_STYLE[style_of(state)], **extra)
    for source, dest, operator, labels in merged_edges(chart, overlay):
        attrs = {"label": "\\n".join(labels)}
        if operator:
            attrs.update(style="dashed", color="#6b7280")  # an operator's action
        if overlay is not None and overlay.count(source, dest):
            attrs["penwidth"] = "2"  # taken in the window
        graph.edge(source, dest, **attrs)
    return str(graph.source)


def to_image(chart: Chart, fmt: str, overlay: Overlay | None = None) -> bytes:
    """SVG or PNG bytes, drawn by Graphviz's ``dot``."""
    if shutil.which("dot") is None:
        raise RenderError(
            f"rendering {fmt.upper()} needs Graphviz's `dot` program, which is not installed "
            "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz). "
            "DOT, Mermaid and Markdown output need nothing."
        )
    source = graphviz.Source(to_dot(chart, overlay))
    return bytes(source.pipe(format=fmt))


def to_mermaid(chart: Chart, overlay: Overlay | None = None) -> str:
    """A Mermaid ``stateDiagram-v2``; final states lead to ``[*]``."""
    ids = _mermaid_ids(chart)
    lines = ["stateDiagram-v2", f"    %% chart {chart.name}"]
    for state in chart.states:
        if ids[state.name] != state.name:  # a name Mermaid cannot take as an id
            lines.append(f'    state "{_mermaid_text(state.name)}" as {ids[state.name]}')
    lines.append(f"    [*] --> {ids[chart.initial.name]}")
    for state in chart.states:
        for note in _notes(state, overlay):
            lines.append(f"    {ids[state.name]} : {_mermaid_text(note)}")
    for source, dest, _, labels in merged_edges(chart, overlay):
        lines.append(f"    {ids[source]} --> {ids[dest]} : {_mermaid_text(' / '.join(labels))}")
    for state in chart.states:
        if state.kind is StateKind.FINAL:
            lines.append(f"    {ids[state.name]} --> [*]")
    for name in ("work", "wait", "success", "failure"):
        members = [ids[s.name] for s in chart.states if style_of(s) == name]
        if members:
            lines.append(f"    classDef {name} {_MERMAID_CLASS[name]}")
            lines.append(f"    class {','.join(members)} {name}")
    return "\n".join(lines) + "\n"


# Words Mermaid's state diagrams read as keywords: a state so named gets an alias.
_MERMAID_KEYWORDS = frozenset(
    {
        "state", "note", "default", "end", "direction", "class", "classdef", "style",
        "click", "as", "hide", "left", "right", "of", "over", "empty", "description",
    }
)  # fmt: skip


def _mermaid_ids(chart: Chart) -> dict[str, str]:
    """Each state's Mermaid id: its name when Mermaid accepts it, else ``s<index>``."""
    ids = {}
    for index, state in enumerate(chart.states):
        plain = state.name.isidentifier() and state.name.isascii()
        ok = plain and state.name.lower() not in _MERMAID_KEYWORDS
        ids[state.name] = state.name if ok else f"s{index}"
    return ids


_MERMAID_CLASS = {
    "work": "fill:#dbeafe",
    "wait": "stroke-dasharray:4 3",
    "success": "fill:#dcfce7",
    "failure": "fill:#fee2e2",
}


def _mermaid_text(text: str) -> str:
    """Mermaid's entity codes for the characters a transition label cannot hold as is."""
    return text.replace(":", "#58;").replace("<", "#60;").replace(">", "#62;")


def to_markdown(chart: Chart) -> str:
    """A transition table that diffs well in review."""
    lines = [
        f"### Chart `{chart.name}`",
        "",
        "| state | kind | timers |",
        "|---|---|---|",
        *(f"| `{s.name}` | {style_of(s)} | {timers(s) or '-'} |" for s in chart.states),
        "",
        "| trigger | from | to | guards | effects | operator |",
        "|---|---|---|---|---|---|",
    ]
    for transition in chart.transitions:
        lines.append(
            "| {trigger} | {sources} | `{dest}` | {guards} | {effects} | {operator} |".format(
                trigger=f"`{transition.trigger}`",
                sources=", ".join(f"`{s}`" for s in transition.sources),
                dest=transition.dest,
                guards=", ".join(f"`{g.name}`" for g in transition.guards) or "-",
                effects=", ".join(e.value for e in transition.effects) or "-",
                operator="yes" if transition.operator else "",
            )
        )
    return "\n".join(lines) + "\n"


def render(chart: Chart, fmt: str, overlay: Overlay | None = None) -> bytes:
    """The chart in ``fmt`` (one of FORMATS) as bytes; ``overlay`` adds live figures."""
    if fmt == "dot":
        return to_dot(chart, overlay).encode()
    if fmt == "mermaid":
        return to_mermaid(chart, overlay).encode()
    if fmt == "md":
        if overlay is not None:
            raise RenderError("the live overlay is drawn in dot, svg, png or mermaid")
        return to_markdown(chart).encode()
    if fmt in ("svg", "png"):
        return to_image(chart, fmt, overlay)
    raise RenderError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
