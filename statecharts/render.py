"""Diagrams of a chart for review: Graphviz DOT (and SVG/PNG), Mermaid, a Markdown table.

All three are generated from the same chart the engine runs, and are deterministic (same
chart, same bytes) so they can be committed and checked for staleness in CI.
"""

from __future__ import annotations

import shutil

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


def merged_edges(chart: Chart) -> list[tuple[str, str, bool, list[str]]]:
    """(source, dest, operator, labels): parallel edges drawn as one, labels stacked, in
    order of first declaration, so a step's retry loops read as one arrow."""
    merged: dict[tuple[str, str, bool], list[str]] = {}
    for source, transition in _edges(chart):
        key = (source, transition.dest, transition.operator)
        merged.setdefault(key, []).append(edge_label(transition))
    return [(src, dest, op, labels) for (src, dest, op), labels in merged.items()]


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


def to_dot(chart: Chart) -> str:
    """Graphviz DOT source (needs no binary)."""
    graph = graphviz.Digraph(chart.name, comment=chart.description or None)
    graph.attr(rankdir="LR", fontname="Helvetica", label=chart.name, labelloc="t")
    graph.attr("node", fontname="Helvetica")
    graph.attr("edge", fontname="Helvetica", fontsize="10")
    for state in chart.states:
        extra = {"label": f"{state.name}\\n({timers(state)})"} if timers(state) else {}
        graph.node(state.name, **_STYLE[style_of(state)], **extra)
    for source, dest, operator, labels in merged_edges(chart):
        attrs = {"label": "\\n".join(labels)}
        if operator:
            attrs.update(style="dashed", color="#6b7280")  # an operator's action
        graph.edge(source, dest, **attrs)
    return str(graph.source)


def to_image(chart: Chart, fmt: str) -> bytes:
    """SVG or PNG bytes, drawn by Graphviz's ``dot``."""
    if shutil.which("dot") is None:
        raise RenderError(
            f"rendering {fmt.upper()} needs Graphviz's `dot` program, which is not installed "
            "(Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz). "
            "DOT, Mermaid and Markdown output need nothing."
        )
    source = graphviz.Source(to_dot(chart))
    return bytes(source.pipe(format=fmt))


def to_mermaid(chart: Chart) -> str:
    """A Mermaid ``stateDiagram-v2``; final states lead to ``[*]``."""
    lines = ["stateDiagram-v2", f"    %% chart {chart.name}"]
    lines.append(f"    [*] --> {chart.initial.name}")
    for state in chart.states:
        if timers(state):
            lines.append(f"    {state.name} : {_mermaid_text(timers(state))}")
    for source, dest, _, labels in merged_edges(chart):
        lines.append(f"    {source} --> {dest} : {_mermaid_text(' / '.join(labels))}")
    for state in chart.states:
        if state.kind is StateKind.FINAL:
            lines.append(f"    {state.name} --> [*]")
    for name in ("work", "wait", "success", "failure"):
        members = [s.name for s in chart.states if style_of(s) == name]
        if members:
            lines.append(f"    classDef {name} {_MERMAID_CLASS[name]}")
            lines.append(f"    class {','.join(members)} {name}")
    return "\n".join(lines) + "\n"


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


def render(chart: Chart, fmt: str) -> bytes:
    """The chart in ``fmt`` (one of FORMATS) as bytes."""
    if fmt == "dot":
        return to_dot(chart).encode()
    if fmt == "mermaid":
        return to_mermaid(chart).encode()
    if fmt == "md":
        return to_markdown(chart).encode()
    if fmt in ("svg", "png"):
        return to_image(chart, fmt)
    raise RenderError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
