"""Diagrams of a chart for review: Graphviz DOT (and SVG/PNG), Mermaid, a Markdown table.

All three are generated from the same chart the engine runs, and are deterministic (same
chart, same bytes) so they can be committed and checked for staleness in CI.

Two views: ``full`` draws every declared transition; ``review`` (``review(chart)``) keeps
every state and every business transition and folds the engine's plumbing (claims,
retries, releases, polls' "not yet", exhaustion, plain cancels, the operator's requeue)
into the states, one "on error" arrow per step and a legend that names what was folded.
"""

from __future__ import annotations

import html
import shutil
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

import graphviz

from statecharts.chart import Chart, State, StateKind, Transition
from statecharts.flow import handler_states
from statecharts.lifecycle import ATTEMPTS_LEFT, DEADLINE_PASSED, ENGINE_TRIGGERS, S, T

FORMATS = ("dot", "svg", "png", "mermaid", "md")
VIEWS = ("review", "full")

Badges = Mapping[str, str]
"""State -> what the engine knows of its handler (retry policy, timeout), drawn in the
state by the review view (``engine.badges``); lines are separated by newlines."""

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
    capped: frozenset[str] = frozenset()  # states whose count stopped at a cap: "N+ jobs"

    def state_note(self, state: State) -> str:
        count = self.jobs.get(state.name, 0)
        if not count:
            return ""
        if state.name in self.capped:
            note = f"{count:,}+ jobs"
        else:
            note = f"{count} job" + ("" if count == 1 else "s")
        age = self.oldest.get(state.name)
        if age is not None and not state.is_final:
            note += f", oldest {age_text(age.total_seconds())}"
        return note

    def count(self, source: str, dest: str) -> int:
        """Transitions from ``source`` to ``dest`` in the window, whatever their trigger."""
        return sum(n for (_, src, dst), n in self.taken.items() if (src, dst) == (source, dest))

    def edge_label(self, source: str, transition: Transition) -> str:
        count = self.taken.get((transition.trigger, source, transition.dest), 0)
        label = edge_label(transition)
        return f"{label} x{count}" if count else label


GRAPHVIZ_INSTALL = "Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz"


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


def _notes(state: State, overlay: Overlay | None, badges: Badges | None = None) -> list[str]:
    """What a state's box says besides its name: its timers, its badge, live figures."""
    notes = [timers(state)] if timers(state) else []
    if badges and badges.get(state.name):
        notes += badges[state.name].splitlines()
    if overlay is not None and overlay.state_note(state):
        notes.append(overlay.state_note(state))
    return notes


def timers(state: State) -> str:
    """A state's timers in words (empty when it has none)."""
    if state.every is not None:
        return f"every {span(state.every)}, deadline {span(state.deadline or 0)}"
    if state.delay is not None:
        return f"after {span(state.delay)}"
    return ""


def age_text(seconds: float) -> str:
    """How long something has waited, as people read it: ``0.4s``, ``5s``, ``3m 20s``,
    ``2h 5m``, ``4d 3h`` (exact timers use ``span``)."""
    seconds = max(seconds, 0.0)
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f}s"
    whole = int(seconds)
    for unit, size, smaller, small_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if whole >= size:
            rest = (whole % size) // small_size
            return f"{whole // size}{unit}" + (f" {rest}{smaller}" if rest else "")
    return f"{whole}s"


def span(seconds: float) -> str:
    """``3600`` -> ``1h``: the largest unit that divides it, else seconds."""
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


# ---------------------------------------------------------------------------------------
# The review view: the business path, with the engine's plumbing folded.

Member = tuple[str, str, str]
"""One declared edge: (trigger, source, dest)."""

# How the review view draws a folded arrow, by what it stands for.
_ARROW_STYLE = {
    "business": {},
    "timer": {},
    "retry": {"color": "#1d4ed8", "fontcolor": "#1d4ed8"},
    "cancel": {"color": "#6b7280", "fontcolor": "#6b7280"},
    "error": {"color": "#b91c1c", "fontcolor": "#b91c1c", "style": "dashed"},
}
_KIND_ORDER = tuple(_ARROW_STYLE)

# What each fold means, in the order the legend lists them (folds into the states say
# where, folds into the legend alone say from where to where).
_LEGEND = {
    "start": "start: claimed when due",
    "retry": "retry: fail or expire with attempts left, after a backoff",
    "retry loop": "fail, expire with attempts left: retried after a backoff",
    "wait": "wait: not done yet, checked again",
    "on error": "on error: fail or expire with no attempt left, or Permanent",
    "deadline": "deadline: the polling deadline passed (deadline, or wait)",
    "elapsed": "elapsed: the wait is over",
    "release": "release: claimed but never started, attempt not counted",
    "cancel": "cancel",
    "operator": "{trigger} (operator)",
}
_ALONE = ("cancel", "operator", "release")  # folds the legend alone shows (an arrow
# labelled cancel stands for itself)


@dataclass(frozen=True)
class Arrow:
    """One arrow of the review view: its labels (stacked), each with its kind and the
    declared edges it stands for."""

    source: str
    dest: str
    parts: tuple[tuple[str, str, tuple[Member, ...]], ...]  # (label, kind, members)

    @property
    def kind(self) -> str:
        """The arrow's most business-like kind: a bounce that also times out is business."""
        return min((kind for _, kind, _ in self.parts), key=_KIND_ORDER.index)

    @property
    def members(self) -> tuple[Member, ...]:
        return tuple(m for _, _, members in self.parts for m in members)


@dataclass(frozen=True)
class Review:
    """What the review view draws: every state, its arrows, the edges folded into each
    state (self-loops of the engine's triggers), and the legend, each line with the
    edges it stands for. Every declared edge is in exactly one of them."""

    chart: Chart
    arrows: tuple[Arrow, ...]
    loops: Mapping[str, tuple[Member, ...]]
    legend: tuple[tuple[str, tuple[Member, ...]], ...]
    groups: Mapping[str, str]  # state -> "main" | "compensation" | "failure"
    main_path: tuple[str, ...]  # the shortest business path from the initial state to success

    def folded(self) -> tuple[Member, ...]:
        """Every declared edge, as the view accounts for it (nothing hidden)."""
        arrows = [m for a in self.arrows for m in a.members]
        loops = [m for members in self.loops.values() for m in members]
        return (*arrows, *loops, *(m for _, members in self.legend for m in members))


def _has_guard(transition: Transition, name: str) -> bool:
    return any(g.name == name for g in transition.guards)


def _fold(source: str, transition: Transition) -> tuple[str, str, str]:
    """Where the review view puts one declared edge: ``(place, key, kind)``; place is
    ``arrow`` (key is its label), ``loop`` (folded into its state) or ``legend``."""
    trigger, dest = transition.trigger, transition.dest
    retry = trigger in (T.FAIL, T.EXPIRE) and _has_guard(transition, ATTEMPTS_LEFT.name)
    if transition.operator:
        return "legend", "operator", ""
    if trigger == T.RELEASE:
        return "legend", "release", ""
    if trigger == T.CANCEL and dest == S.CANCELLED:
        return "legend", "cancel", ""
    if source == dest and trigger in ENGINE_TRIGGERS:
        return "loop", "retry loop" if retry else trigger, ""
    if retry:
        return "arrow", "retry", "retry"
    if trigger in (T.FAIL, T.EXPIRE, T.FAIL_PERMANENT):
        return "arrow", "on error", "error"
    if trigger == T.DEADLINE or (
        trigger == T.WAIT and _has_guard(transition, DEADLINE_PASSED.name)
    ):
        return "arrow", "deadline", "timer"
    if trigger == T.ELAPSED:
        return "arrow", "elapsed", "timer"
    if trigger == T.START:
        return "arrow", "start", "business"
    if trigger == T.CANCEL:
        return "arrow", "cancel", "cancel"
    return "arrow", edge_label(transition), "business"


def review(chart: Chart) -> Review:
    """The review view of ``chart``: see ``Review``."""
    parts: dict[tuple[str, str], dict[str, tuple[str, list[Member]]]] = {}
    loops: dict[str, list[Member]] = {}
    in_place: dict[str, list[str]] = {}  # fold key -> states it is folded into
    alone: dict[str, list[Member]] = {}  # fold key -> edges only the legend shows
    for source, transition in _edges(chart):
        member = (transition.trigger, source, transition.dest)
        place, key, kind = _fold(source, transition)
        if place == "arrow":
            labels = parts.setdefault((source, transition.dest), {})
            labels.setdefault(key, (kind, []))[1].append(member)
            if transition.trigger in ENGINE_TRIGGERS:  # a fold the legend explains
                in_place.setdefault(key, [])
        elif place == "loop":
            loops.setdefault(source, []).append(member)
            in_place.setdefault(key, [])
            if source not in in_place[key]:
                in_place[key].append(source)
        else:
            alone.setdefault(key, []).append(member)
    arrows = tuple(
        Arrow(src, dst, tuple((label, kind, tuple(ms)) for label, (kind, ms) in labels.items()))
        for (src, dst), labels in parts.items()
    )
    legend: list[tuple[str, tuple[Member, ...]]] = []
    others = sorted(k for k in in_place if k not in _LEGEND and any(in_place[k]))
    for key in [*_LEGEND, *others]:
        text = _LEGEND.get(key, f"{key}: taken in place")
        if key in in_place and key not in _ALONE and (key in _LEGEND or in_place[key]):
            legend.append((text.format(trigger=key) + _where(chart, in_place[key]), ()))
        members = alone.get(key, [])
        stay = [m for m in members if m[1] == m[2]]
        if stay:
            line = text.format(trigger=stay[0][0]) + _where(chart, [m[1] for m in stay])
            legend.append((line, tuple(stay)))
        by_dest: dict[tuple[str, str], list[Member]] = {}
        for member in members:
            if member[1] != member[2]:
                by_dest.setdefault((member[0], member[2]), []).append(member)
        for (trigger, dest), moves in by_dest.items():
            sources = ", ".join(dict.fromkeys(m[1] for m in moves))
            legend.append((f"{text.format(trigger=trigger)}: {sources} -> {dest}", tuple(moves)))
    groups, main_path = _groups(chart, arrows)
    return Review(
        chart=chart,
        arrows=arrows,
        loops={s: tuple(ms) for s, ms in loops.items()},
        legend=tuple(legend),
        groups=groups,
        main_path=main_path,
    )


def _where(chart: Chart, states: list[str]) -> str:
    """`` (in every step)`` or `` (in a, b)``: where a fold into the states happens."""
    if not states:
        return ""
    steps = [s for s in handler_states(chart) if not chart.state(s).is_final]
    if len(states) > 1 and set(states) == set(steps):
        return " (in every step)"
    return f" (in {', '.join(states)})"


def _groups(chart: Chart, arrows: tuple[Arrow, ...]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The main path (the shortest business path from the initial state to a success),
    the compensation (steps off it that cannot lead to success, and the ends only they
    reach) and the failures (the other failed ends)."""
    forward: dict[str, list[str]] = {}
    back: dict[str, list[str]] = {}
    for arrow in arrows:
        if any(kind in ("business", "timer") for _, kind, _ in arrow.parts):
            forward.setdefault(arrow.source, []).append(arrow.dest)
        if any(kind in ("business", "timer", "retry") for _, kind, _ in arrow.parts):
            back.setdefault(arrow.dest, []).append(arrow.source)
    successes = [s.name for s in chart.states if s.is_final and s.success]
    came_from: dict[str, str | None] = {chart.initial.name: None}
    queue = deque([chart.initial.name])
    while queue:
        state = queue.popleft()
        for dest in forward.get(state, []):
            if dest not in came_from:
                came_from[dest] = state
                queue.append(dest)
    path: list[str] = []
    end = next((s for s in successes if s in came_from), None)
    while end is not None:
        path.insert(0, end)
        end = came_from[end]
    groups = dict.fromkeys(path or [chart.initial.name], "main")
    hopeful = set(successes)
    queue = deque(successes)
    while queue:
        for source in back.get(queue.popleft(), []):
            if source not in hopeful:
                hopeful.add(source)
                queue.append(source)
    for step in chart.states:
        if step.name in groups or step.is_final or step.kind is StateKind.INITIAL:
            continue
        if step.name not in hopeful:
            groups[step.name] = "compensation"
    for end_state in chart.states:
        if not end_state.is_final or end_state.success or end_state.name in groups:
            continue
        sources = {a.source for a in arrows if a.dest == end_state.name}
        compensated = sources and all(groups.get(s) == "compensation" for s in sources)
        groups[end_state.name] = "compensation" if compensated else "failure"
    return groups, tuple(path or [chart.initial.name])


def _count(overlay: Overlay | None, members: tuple[Member, ...] | list[Member]) -> int:
    if overlay is None:
        return 0
    return sum(overlay.taken.get(m, 0) for m in members)


def _counted(text: str, count: int) -> str:
    return f"{text} x{count}" if count else text


def _review_notes(
    rv: Review, state: State, overlay: Overlay | None, badges: Badges | None
) -> list[str]:
    """A state's lines in the review view: timers, badge, live figures (jobs, and how
    often its folded loops were taken)."""
    notes = _notes(state, overlay, badges)
    loops = rv.loops.get(state.name, ())
    if overlay is not None and loops:
        taken = {
            word: _count(overlay, [m for m in loops if m[0] in triggers])
            for word, triggers in (
                ("started", (T.START,)),
                ("retried", (T.FAIL, T.EXPIRE)),
                ("checked", (T.WAIT,)),
            )
        }
        notes += [f"{word} x{n}" for word, n in taken.items() if n]
    return notes


_GROUP_STYLE = {
    "compensation": {"label": "compensation", "color": "#b45309", "fontcolor": "#b45309"},
    "failure": {"label": "failed", "color": "#b91c1c", "fontcolor": "#b91c1c"},
}


def _title(chart: Chart, overlay: Overlay | None) -> str:
    title = chart.name
    if overlay is not None and overlay.caption:
        title += f" ({overlay.caption})"
    elif overlay is not None:
        title += f" (live: transitions in the last {span(overlay.window.total_seconds())})"
    return title


def _html_label(name: str, notes: list[str]) -> str:
    """A state's name with its notes, ``(as in the full view)``, in a smaller grey font
    (a Graphviz HTML label)."""
    lines = [html.escape(name)]
    lines += [f'<font point-size="9" color="#374151">({html.escape(n)})</font>' for n in notes]
    return "<" + "<br/>".join(lines) + ">"


def legend_lines(
    rv: Review, overlay: Overlay | None = None, badges: Badges | None = None
) -> list[str]:
    """The legend of the review view: what each fold stands for (with live counts)."""
    lines = ["folded plumbing (--view full draws every transition):"]
    lines += [_counted(text, _count(overlay, members)) for text, members in rv.legend]
    if badges and any(badges.get(s) for s in rv.chart.state_names):
        lines.append("in a step: attempts, backoff (first wait x factor), timeout")
    return lines


def _review_dot(chart: Chart, overlay: Overlay | None, badges: Badges | None) -> str:
    rv = review(chart)
    graph = graphviz.Digraph(chart.name, comment=chart.description or None)
    title = f"{chart.name}, review view"
    if overlay is not None:
        title = _title(chart, overlay).replace(chart.name, title, 1)
    graph.attr(
        rankdir="LR",
        fontname="Helvetica",
        label=title,
        labelloc="t",
        nodesep="0.4",
        ranksep="0.5",
        mclimit="0.5",  # fewer crossing passes: measured to keep edges off the labels
    )
    graph.attr("node", fontname="Helvetica")
    graph.attr("edge", fontname="Helvetica", fontsize="10")
    clusters: dict[str, graphviz.Digraph] = {}
    for group in ("compensation", "failure"):
        if group in rv.groups.values():
            clusters[group] = graphviz.Digraph(f"cluster_{group}")
            clusters[group].attr(
                style="rounded,dashed",
                fontname="Helvetica",
                fontsize="10",
                labeljust="r",  # edges come in from the left
                **_GROUP_STYLE[group],
            )
    for state in chart.states:
        notes = _review_notes(rv, state, overlay, badges)
        group = rv.groups.get(state.name, "")
        extra = {"label": _html_label(state.name, notes)} if notes else {}
        if group == "main":
            extra["group"] = "main"  # keeps the main path on one straight line
        style = dict(_STYLE[style_of(state)])
        if state.is_final:  # boxes keep long names compact; two borders still say final
            style.update(shape="box", style="rounded,filled", peripheries="2")
        clusters.get(group, graph).node(state.name, **style, **extra)
    for cluster in clusters.values():
        graph.subgraph(cluster)
    main = set(rv.main_path)
    for arrow in rv.arrows:
        labels = [_counted(label, _count(overlay, ms)) for label, _, ms in arrow.parts]
        attrs = {"label": "\\n".join(labels), **_ARROW_STYLE[arrow.kind]}
        if arrow.source in main and arrow.dest in main:
            attrs["weight"] = "10"  # the main path straight, left to right
        if _count(overlay, arrow.members):
            attrs["penwidth"] = "2"  # taken in the window
        graph.edge(arrow.source, arrow.dest, **attrs)
    legend = "legend"
    while chart.has_state(legend):  # a node of its own, whatever the states are named
        legend = f"_{legend}"
    graph.node(
        legend,
        label="\\l".join(legend_lines(rv, overlay, badges)) + "\\l",
        shape="note",
        fontsize="9",
        color="#9ca3af",
        fontcolor="#374151",
    )
    return str(graph.source)


def to_dot(
    chart: Chart,
    overlay: Overlay | None = None,
    *,
    view: str = "full",
    badges: Badges | None = None,
) -> str:
    """Graphviz DOT source (needs no binary); ``overlay`` adds live figures, ``badges``
    the engine's figures per state; ``view``: ``full`` or ``review`` (VIEWS)."""
    if _view(view) == "review":
        return _review_dot(chart, overlay, badges)
    graph = graphviz.Digraph(chart.name, comment=chart.description or None)
    graph.attr(rankdir="LR", fontname="Helvetica", label=_title(chart, overlay), labelloc="t")
    graph.attr("node", fontname="Helvetica")
    graph.attr("edge", fontname="Helvetica", fontsize="10")
    for state in chart.states:
        notes = _notes(state, overlay, badges)
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


def _view(view: str) -> str:
    if view not in VIEWS:
        raise RenderError(f"unknown view {view!r}; views: {', '.join(VIEWS)}")
    return view


def to_image(
    chart: Chart,
    fmt: str,
    overlay: Overlay | None = None,
    *,
    view: str = "full",
    badges: Badges | None = None,
) -> bytes:
    """SVG or PNG bytes, drawn by Graphviz's ``dot``."""
    if shutil.which("dot") is None:
        raise RenderError(
            f"rendering {fmt.upper()} needs Graphviz's `dot` program, which is not installed "
            f"({GRAPHVIZ_INSTALL}). DOT, Mermaid and Markdown output need nothing."
        )
    source = graphviz.Source(to_dot(chart, overlay, view=view, badges=badges))
    return bytes(source.pipe(format=fmt))


def to_mermaid(
    chart: Chart,
    overlay: Overlay | None = None,
    *,
    view: str = "full",
    badges: Badges | None = None,
) -> str:
    """A Mermaid ``stateDiagram-v2``; in the full view final states lead to ``[*]``."""
    if _view(view) == "review":
        return _review_mermaid(chart, overlay, badges)
    ids = _mermaid_ids(chart)
    lines = ["stateDiagram-v2", f"    %% chart {chart.name}"]
    for state in chart.states:
        if ids[state.name] != state.name:  # a name Mermaid cannot take as an id
            lines.append(f'    state "{_mermaid_text(state.name)}" as {ids[state.name]}')
    lines.append(f"    [*] --> {ids[chart.initial.name]}")
    for state in chart.states:
        for note in _notes(state, overlay, badges):
            lines.append(f"    {ids[state.name]} : {_mermaid_text(note)}")
    for source, dest, _, labels in merged_edges(chart, overlay):
        lines.append(f"    {ids[source]} --> {ids[dest]} : {_mermaid_text(' / '.join(labels))}")
    for state in chart.states:
        if state.kind is StateKind.FINAL:
            lines.append(f"    {ids[state.name]} --> [*]")
    lines += _mermaid_classes(chart, ids)
    return "\n".join(lines) + "\n"


def _mermaid_classes(chart: Chart, ids: Mapping[str, str]) -> list[str]:
    lines = []
    for name in ("work", "wait", "success", "failure"):
        members = [ids[s.name] for s in chart.states if style_of(s) == name]
        if members:
            lines.append(f"    classDef {name} {_MERMAID_CLASS[name]}")
            lines.append(f"    class {','.join(members)} {name}")
    return lines


def _review_mermaid(chart: Chart, overlay: Overlay | None, badges: Badges | None) -> str:
    """The review view in Mermaid: the same arrows and notes; the legend is a note on
    the initial state (Mermaid lays the diagram out itself: no groups)."""
    rv = review(chart)
    ids = _mermaid_ids(chart)
    lines = [
        "stateDiagram-v2",
        f"    %% chart {chart.name}, review view (--view full draws every transition)",
        "    direction LR",
    ]
    for state in chart.states:  # every state, an end no arrow reaches too
        if ids[state.name] != state.name:
            lines.append(f'    state "{_mermaid_text(state.name)}" as {ids[state.name]}')
        else:
            lines.append(f"    {state.name}")
    lines.append(f"    [*] --> {ids[chart.initial.name]}")
    for state in chart.states:
        for note in _review_notes(rv, state, overlay, badges):
            lines.append(f"    {ids[state.name]} : {_mermaid_text(note)}")
    for arrow in rv.arrows:
        label = " / ".join(_counted(text, _count(overlay, ms)) for text, _, ms in arrow.parts)
        lines.append(f"    {ids[arrow.source]} --> {ids[arrow.dest]} : {_mermaid_text(label)}")
    lines.append(f"    note left of {ids[chart.initial.name]}")
    lines += [f"        {_mermaid_text(line)}" for line in legend_lines(rv, overlay, badges)]
    lines.append("    end note")
    lines += _mermaid_classes(chart, ids)
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


def render(
    chart: Chart,
    fmt: str,
    overlay: Overlay | None = None,
    *,
    view: str = "full",
    badges: Badges | None = None,
) -> bytes:
    """The chart in ``fmt`` (one of FORMATS) as bytes; ``overlay`` adds live figures,
    ``badges`` the engine's figures per state; ``view`` is ``full`` (every transition) or
    ``review`` (the plumbing folded). Markdown is the full table in either view."""
    _view(view)
    if fmt == "dot":
        return to_dot(chart, overlay, view=view, badges=badges).encode()
    if fmt == "mermaid":
        return to_mermaid(chart, overlay, view=view, badges=badges).encode()
    if fmt == "md":
        if overlay is not None:
            raise RenderError("the live overlay is drawn in dot, svg, png or mermaid")
        return to_markdown(chart).encode()
    if fmt in ("svg", "png"):
        return to_image(chart, fmt, overlay, view=view, badges=badges)
    raise RenderError(f"unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
