"""Diagrams: golden DOT, Mermaid, Markdown and SVG text for the lifecycle, the payout and
the demo's flow in both views (full and review); images; layouts without collisions;
deterministic output."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from docs.examples import payout as payout_app
from docs.examples.payout import payout_chart
from engine.badges import VARIES, badges, chart_badges, policy_text
from engine.cli import cli
from engine.demo import SHIPPING
from engine.demo import build as build_demo
from engine.retry import NoRetry, RetryPolicy
from statecharts import (
    ENGINE_TRIGGERS,
    Chart,
    Final,
    Poll,
    State,
    StateKind,
    Transition,
    Wait,
    Work,
    flow,
    lifecycle,
)
from statecharts.render import (
    Overlay,
    RenderError,
    render,
    review,
    to_dot,
    to_markdown,
    to_mermaid,
)

GOLDEN = Path(__file__).with_name("golden")
DOCS = Path(__file__).resolve().parents[2] / "docs"
CHARTS: dict[str, Callable[[], Chart]] = {
    "lifecycle": lifecycle,
    "payout": payout_chart,
    "shipping": lambda: SHIPPING,
}
WRITERS = {"dot": to_dot, "mmd": to_mermaid, "md": to_markdown}


def payout_badges() -> dict[str, str]:
    """What `jobcharts render payout --app docs.examples.payout:engine` writes in the steps."""
    return badges(payout_app.engine.registry.get("payout"))


def shipping_badges() -> dict[str, str]:
    """What `jobcharts render ship_order --app engine.demo:build` writes in the steps."""
    return badges(build_demo().registry.get("ship_order"))


# The review view's cases: the chart alone (no badges) and the two flows with the badges
# the CLI draws from their apps.
REVIEWS: dict[str, tuple[Callable[[], Chart], Callable[[], dict[str, str] | None]]] = {
    "lifecycle": (lifecycle, lambda: None),
    "payout": (payout_chart, payout_badges),
    "shipping": (lambda: SHIPPING, shipping_badges),
}
REVIEW_WRITERS = {"dot": to_dot, "mmd": to_mermaid}


def reviewed(name: str, suffix: str = "dot") -> str:
    chart, badge = REVIEWS[name]
    return REVIEW_WRITERS[suffix](chart(), view="review", badges=badge())


@pytest.mark.parametrize("chart_name", sorted(CHARTS))
@pytest.mark.parametrize("suffix", sorted(WRITERS))
def test_output_matches_its_golden_file(chart_name: str, suffix: str) -> None:
    """Each chart renders byte for byte as its reviewed golden file (UPDATE_GOLDEN=1 rewrites)."""
    text = WRITERS[suffix](CHARTS[chart_name]())
    path = GOLDEN / f"{chart_name}.{suffix}"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{path} is stale: review the diff, then UPDATE_GOLDEN=1"


@pytest.mark.parametrize("chart_name", sorted(CHARTS))
def test_output_is_deterministic(chart_name: str) -> None:
    """Two renderings of equal charts are identical, so committed diagrams can be checked."""
    for writer in WRITERS.values():
        assert writer(CHARTS[chart_name]()) == writer(CHARTS[chart_name]())


MERMAID_LINE = re.compile(
    r"^(stateDiagram-v2"
    r"|    %% .*"
    r"|    (\[\*\]|[A-Za-z_][A-Za-z0-9_]*) --> (\[\*\]|[A-Za-z_][A-Za-z0-9_]*)( : [^:<>]+)?"
    r"|    [A-Za-z_][A-Za-z0-9_]* : [^:<>]+"
    r'|    state "[^"]+" as s[0-9]+'
    r"|    classDef [a-z]+ [^;]+"
    r"|    class [A-Za-z_][A-Za-z0-9_,]* [a-z]+)$"
)


@pytest.mark.parametrize("chart_name", sorted(CHARTS))
def test_mermaid_uses_only_valid_statements(chart_name: str) -> None:
    """Every Mermaid line is a statement of stateDiagram-v2 with escaped label characters."""
    text = to_mermaid(CHARTS[chart_name]())
    bad = [line for line in text.splitlines() if not MERMAID_LINE.match(line)]
    assert bad == []
    chart: Chart = CHARTS[chart_name]()
    edges = [line for line in text.splitlines() if " --> " in line and "[*]" not in line]
    drawn = {(line.split()[0], line.split()[2]) for line in edges}
    assert len(edges) == len(drawn)  # parallel edges are merged into one arrow
    assert drawn == {(s, t.dest) for t in chart.transitions for s in t.sources}
    labels = " / ".join(line.split(" : ", 1)[1] for line in edges)
    assert labels.count(" / ") + 1 == sum(len(t.sources) for t in chart.transitions)


def test_styles_follow_the_kind_of_state() -> None:
    """Work, wait, success and failure states are told apart in DOT and in Mermaid."""
    dot, mermaid = to_dot(payout_chart()), to_mermaid(payout_chart())
    assert re.search(r"charge \[.*shape=box.*filled", dot)
    assert re.search(r"await_settlement \[.*\(every 1min, deadline 1h\).*dashed", dot)
    assert re.search(r"succeeded \[.*doublecircle", dot) and "#dcfce7" in dot
    assert "class charge,notify,refund work" in mermaid
    assert "class declined,refunded,quarantined,cancelled failure" in mermaid
    assert "await_settlement : every 1min, deadline 1h" in mermaid
    assert "bounced\\nwait [deadline <= now]\\ndeadline [deadline <= now]" in dot
    assert 'quarantined -> pending [label=requeue color="#6b7280" style=dashed]' in dot


def test_images_render_with_graphviz() -> None:
    """SVG and PNG come from Graphviz's dot (installed by .ci/run; required in CI)."""
    if shutil.which("dot") is None:
        if os.environ.get("JOBCHARTS_CI"):
            pytest.fail("Graphviz's dot is required in CI")
        pytest.skip("Graphviz's dot is not installed")
    svg = render(lifecycle(), "svg")
    assert svg.lstrip().startswith(b"<?xml") and b"retry_wait" in svg
    assert render(payout_chart(), "png").startswith(b"\x89PNG")


def test_missing_dot_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without dot, SVG says what to install while DOT, Mermaid and Markdown still work."""
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RenderError, match="apt-get install graphviz"):
        render(lifecycle(), "svg")
    assert render(lifecycle(), "dot").startswith(b"//")


def test_cli_render_prints_and_writes(tmp_path: Path) -> None:
    """`jobcharts render` prints text formats, writes images with --out, names unknowns."""
    runner = CliRunner()
    result = runner.invoke(cli, ["render", "--format", "mermaid"])
    assert result.exit_code == 0 and result.output == to_mermaid(lifecycle(), view="review")
    result = runner.invoke(cli, ["render", "--format", "mermaid", "--view", "full"])
    assert result.exit_code == 0 and result.output == to_mermaid(lifecycle())
    wrong = runner.invoke(cli, ["render", "--view", "fold"])
    assert wrong.exit_code != 0 and "review" in wrong.output and "full" in wrong.output
    app = ["--app", "tests.engine.cli_app:engine"]
    result = runner.invoke(cli, ["render", "ship", *app, "--format", "md"])
    assert result.exit_code == 0 and "### Chart `lifecycle`" in result.output
    unknown = runner.invoke(cli, ["render", "shipp", *app])
    assert unknown.exit_code != 0 and "ship" in unknown.output
    if shutil.which("dot"):
        out = tmp_path / "ship.svg"
        result = runner.invoke(cli, ["render", "ship", *app, "--format", "svg", "--out", str(out)])
        assert result.exit_code == 0 and out.read_bytes().lstrip().startswith(b"<?xml")


MERMAID = Path(__file__).resolve().parents[1] / "mermaid"


def test_mermaid_output_parses_with_mermaids_own_parser(tmp_path: Path) -> None:
    """Every chart's Mermaid, a live overlay and the docs' Mermaid blocks parse with
    Mermaid's parser (Node.js, installed by scripts/setup.sh); a broken file does not."""
    if shutil.which("node") is None or not (MERMAID / "node_modules" / "mermaid").is_dir():
        if os.environ.get("JOBCHARTS_CI"):
            pytest.fail("Node.js and tests/mermaid's packages are required in CI")
        pytest.skip("Mermaid's parser is not installed (needs npm; see scripts/setup.sh)")
    sources = {name: to_mermaid(make()) for name, make in CHARTS.items()}
    overlay = Overlay(
        jobs={"pending": 2, "await_settlement": 1, "succeeded": 9},
        oldest={"pending": timedelta(seconds=90)},
        taken={("start", "pending", "charge"): 3, ("settled", "await_settlement", "notify"): 1},
    )
    sources["payout-live"] = to_mermaid(payout_chart(), overlay)
    odd = flow(  # names Mermaid reads as keywords or cannot take as ids get aliases
        "odd",
        Work("ship-it", on={"ok": "note"}),
        Work("note", on={"go": "state"}),
        Work("state", on={"x": "default"}),
        Final("default", success=True),
    )
    sources["odd-names"] = to_mermaid(odd)
    assert 'state "ship-it" as s1' in sources["odd-names"]
    for name in REVIEWS:  # the review view: badges, stacked labels, the legend's note
        sources[f"{name}-review"] = reviewed(name, "mmd")
    sources["payout-review-live"] = to_mermaid(
        payout_chart(), overlay, view="review", badges=payout_badges()
    )
    sources["odd-names-review"] = to_mermaid(
        odd, view="review", badges={"ship-it": policy_text(NoRetry("it: <pays> twice"), 5)}
    )
    assert "note left of pending" in sources["odd-names-review"]
    docs = Path(__file__).resolve().parents[2] / "docs"
    for doc in sorted(docs.glob("*.md")):
        for index, block in enumerate(re.findall(r"```mermaid\n(.*?)```", doc.read_text(), re.S)):
            sources[f"{doc.stem}-{index}"] = block
    assert len(sources) >= 5
    files = []
    for name, text in sources.items():
        files.append(tmp_path / f"{name}.mmd")
        files[-1].write_text(text)
    command = ["node", str(MERMAID / "parse.mjs")]
    good = subprocess.run([*command, *map(str, files)], capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.count("ok ") == len(files)
    broken = tmp_path / "broken.mmd"
    broken.write_text(
        sources["payout"].replace(" --> charge : ", " --> charge :: ", 1) + "    class\n"
    )
    bad = subprocess.run([*command, str(broken)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "FAIL" in bad.stdout


# ---------------------------------------------------------------------------------------
# The review view


@pytest.mark.parametrize("name", sorted(REVIEWS))
@pytest.mark.parametrize("suffix", sorted(REVIEW_WRITERS))
def test_review_view_matches_its_golden_file(name: str, suffix: str) -> None:
    """The review view of each chart, byte for byte (UPDATE_GOLDEN=1 rewrites)."""
    text = reviewed(name, suffix)
    path = GOLDEN / f"{name}.review.{suffix}"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{path} is stale: review the diff, then UPDATE_GOLDEN=1"
    assert text == reviewed(name, suffix)  # deterministic


@pytest.mark.parametrize("name", sorted(REVIEWS))
def test_markdown_is_the_full_table_in_both_views(name: str) -> None:
    chart, badge = REVIEWS[name]
    table = render(chart(), "md", view="review", badges=badge())
    assert table == render(chart(), "md") == (GOLDEN / f"{name}.md").read_bytes()


def needs_dot() -> None:
    if shutil.which("dot") is None:
        if os.environ.get("JOBCHARTS_CI"):
            pytest.fail("Graphviz's dot is required in CI")
        pytest.skip("Graphviz's dot is not installed")


def svg_text(svg: bytes) -> str:
    """The words of an SVG drawing, one <text> a line, sorted: what it says, without the
    coordinates and the drawing order a Graphviz version may change."""
    found = re.findall(r"<text[^>]*>(.*?)</text>", svg.decode(), re.S)
    return "".join(html.unescape(t) + "\n" for t in sorted(found))


@pytest.mark.parametrize("name", sorted(REVIEWS))
@pytest.mark.parametrize("view", ["review", "full"])
def test_svg_and_png_draw_the_golden_words(name: str, view: str) -> None:
    """SVG: every word drawn, in order, as in its golden file; PNG: the same drawing (its
    pixel size is the SVG's at 96 dpi)."""
    needs_dot()
    chart, badge = REVIEWS[name]
    extra: dict[str, Any] = {"badges": badge()} if view == "review" else {}
    svg = render(chart(), "svg", view=view, **extra)
    path = GOLDEN / (f"{name}.review.svg.txt" if view == "review" else f"{name}.svg.txt")
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(svg_text(svg))
    assert svg_text(svg) == path.read_text(), f"{path} is stale"
    png = render(chart(), "png", view=view, **extra)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    match = re.search(rb'<svg width="(\d+)pt" height="(\d+)pt"', svg)
    assert match is not None
    assert abs(width - int(match[1]) * 96 / 72) <= 2
    assert abs(height - int(match[2]) * 96 / 72) <= 2


def odd_chart() -> Chart:
    """A hand-written chart: engine triggers off the usual paths, a business self-loop,
    a state named like the legend's node."""
    return Chart(
        name="odd",
        states=(
            State("new", StateKind.INITIAL),
            State("legend", StateKind.WORK),
            State("nap", StateKind.WAIT, delay=300),
            State("done", StateKind.FINAL, success=True),
            State("quarantined", StateKind.FINAL, success=False),
        ),
        transitions=(
            Transition("start", ("new",), "legend"),
            Transition("again", ("legend",), "legend"),
            Transition("snooze", ("legend",), "nap"),
            Transition("elapsed", ("nap",), "legend"),
            Transition("succeed", ("legend",), "done"),
            Transition("fail", ("legend",), "quarantined"),
            Transition("deadline", ("nap",), "nap"),
            Transition("release", ("legend",), "new"),
            Transition("requeue", ("quarantined",), "new", operator=True),
        ),
    )


def every_chart() -> dict[str, Chart]:
    charts = {name: make() for name, make in CHARTS.items()}
    charts["odd"] = odd_chart()
    charts["wait-flow"] = flow(
        "wait_flow",
        Work("book", on={"booked": "cool_off"}, on_error="undo"),
        Wait("cool_off", delay=600, then="confirm"),
        Work("confirm", on={"confirmed": "succeeded"}, on_cancel="undo"),
        Work("undo", on={"undone": "undone"}, on_cancel=None),
        Poll("unused", every=1, deadline=5, on={"ok": "succeeded"}),
        Final("undone", success=False),
    )
    return charts


@pytest.mark.parametrize("name", sorted(every_chart()))
def test_the_review_view_hides_nothing(name: str) -> None:
    """Every declared edge is drawn, folded into its state or named in the legend, exactly
    once; no loop of the engine's triggers is drawn; every state is drawn."""
    chart = every_chart()[name]
    view = review(chart)
    declared = Counter((t.trigger, s, t.dest) for t in chart.transitions for s in t.sources)
    assert Counter(view.folded()) == declared
    for arrow in view.arrows:
        triggers = {trigger for trigger, _, _ in arrow.members}
        assert not (arrow.source == arrow.dest and triggers & ENGINE_TRIGGERS)
        assert not triggers & {"requeue", "release"}
    dot = to_dot(chart, view="review")
    drawn = re.findall(r"^\t(\S+) -> (\S+) \[", dot, re.M)
    assert drawn == [(a.source, a.dest) for a in view.arrows]
    for state in chart.states:
        assert re.search(rf"^\t+{re.escape(state.name)} \[", dot, re.M), state.name
    assert "--view full draws every transition" in dot


def test_the_review_view_folds_the_plumbing_of_the_payout() -> None:
    """The payout's business path, one "on error" arrow per step, deadline and cancel as
    plain labels, the requeue once in the legend, each step's badge."""
    view = review(payout_chart())
    arrows = {(a.source, a.dest): [label for label, _, _ in a.parts] for a in view.arrows}
    assert arrows == {
        ("pending", "charge"): ["start"],
        ("charge", "await_settlement"): ["charged"],
        ("charge", "declined"): ["declined"],
        ("charge", "quarantined"): ["on error"],
        ("charge", "refund"): ["cancel"],
        ("await_settlement", "notify"): ["settled"],
        ("await_settlement", "refund"): ["bounced", "deadline", "cancel"],
        ("await_settlement", "quarantined"): ["on error"],
        ("notify", "succeeded"): ["notified"],
        ("notify", "quarantined"): ["on error"],
        ("notify", "refund"): ["cancel"],
        ("refund", "refunded"): ["refunded"],
        ("refund", "cancelled"): ["nothing_charged"],
        ("refund", "quarantined"): ["on error"],
    }
    assert view.main_path == ("pending", "charge", "await_settlement", "notify", "succeeded")
    groups = {
        g: sorted(s for s, v in view.groups.items() if v == g) for g in ("compensation", "failure")
    }
    assert groups == {  # cancelled is drawn as reached from the refund alone
        "compensation": ["cancelled", "refund", "refunded"],
        "failure": ["declined", "quarantined"],
    }
    legend = [line for line, _ in view.legend]
    assert legend.count("requeue (operator): quarantined, cancelled -> pending") == 1
    assert "cancel: pending -> cancelled" in legend
    assert "wait: not done yet, checked again (in await_settlement)" in legend
    assert "start: claimed when due (in every step)" in legend
    dot = reviewed("payout")
    assert re.search(r"charge \[label=<charge<br/><font[^>]*>\(3 attempts, 1s x2, 30s\)<", dot)
    assert "in a step: attempts, backoff" in dot
    assert 'await_settlement -> refund [label="bounced\\ndeadline\\ncancel"' in dot
    assert "subgraph cluster_compensation" in dot and "subgraph cluster_failure" in dot
    assert "charge -> await_settlement [label=charged weight=10]" in dot
    bare = to_dot(payout_chart(), view="review")  # the chart alone: folded, no badge
    assert "attempts" not in bare.replace("with attempts left", "").replace("no attempt left", "")
    assert "charge -> quarantined" in bare and "charge -> charge" not in bare


def test_only_the_engines_folds_are_explained() -> None:
    """An outcome named like a fold is the handler's own: drawn, not explained away."""
    chart = flow(
        "own", Work("ask", on={"retry": "ask_again"}), Work("ask_again", on={"ok": "succeeded"})
    )
    legend = [line for line, _ in review(chart).legend]
    assert not any(line.startswith("retry:") for line in legend)
    assert review(chart).main_path == ("pending", "ask", "ask_again", "succeeded")


def test_the_lifecycle_review_keeps_its_retry_state() -> None:
    view = review(lifecycle())
    arrows = {(a.source, a.dest): [label for label, _, _ in a.parts] for a in view.arrows}
    assert arrows == {
        ("pending", "running"): ["start"],
        ("retry_wait", "running"): ["start"],
        ("running", "succeeded"): ["succeed"],
        ("running", "retry_wait"): ["retry"],
        ("running", "quarantined"): ["on error"],
    }
    assert view.main_path == ("pending", "running", "succeeded")
    assert "retry_wait" not in view.groups
    legend = [line for line, _ in view.legend]
    assert "release: claimed but never started, attempt not counted: running -> pending" in (legend)
    assert "cancel: pending, running, retry_wait -> cancelled" in legend


def test_the_review_view_counts_live_figures_on_its_folds() -> None:
    overlay = Overlay(
        jobs={"charge": 1},
        taken={
            ("fail", "charge", "charge"): 2,
            ("start", "charge", "charge"): 3,
            ("fail_permanent", "charge", "quarantined"): 1,
            ("expire", "charge", "quarantined"): 1,
            ("wait", "await_settlement", "refund"): 1,
            ("cancel", "pending", "cancelled"): 4,
        },
        caption="a test",
    )
    dot = to_dot(payout_chart(), overlay, view="review")
    assert "1 job" in dot and "started x3" in dot and "retried x2" in dot
    assert 'charge -> quarantined [label="on error x2"' in dot and "penwidth=2" in dot
    assert "bounced\\ndeadline x1\\ncancel" in dot
    assert "cancel: pending -&gt; cancelled x4" in dot or "cancel: pending -> cancelled x4" in dot
    assert 'label="payout, review view (a test)"' in dot
    mermaid = to_mermaid(payout_chart(), overlay, view="review")
    assert "charge : retried x2" in mermaid and "on error x2" in mermaid


def test_an_unknown_view_is_refused() -> None:
    with pytest.raises(RenderError, match="views: review, full"):
        render(lifecycle(), "dot", view="folded")


def test_graphviz_accepts_every_dot_output() -> None:
    """Every DOT the renderer writes (both views, with badges and live figures, odd
    names) is read by Graphviz without an error or a warning."""
    needs_dot()
    overlay = Overlay(jobs={"pending": 1}, taken={("start", "pending", "charge"): 2})
    sources = {f"{name}-full": to_dot(chart) for name, chart in every_chart().items()}
    sources |= {f"{name}-review": to_dot(c, view="review") for name, c in every_chart().items()}
    sources |= {f"{name}-badges": reviewed(name) for name in REVIEWS}
    sources["live-full"] = to_dot(payout_chart(), overlay)
    sources["live-review"] = to_dot(payout_chart(), overlay, view="review", badges=payout_badges())
    sources["quoted"] = to_dot(
        flow("q", Work("a&b", on={"x<y": "succeeded"})),
        view="review",
        badges={"a&b": policy_text(NoRetry('a "quoted" <reason> & more'), 1)},
    )
    for name, source in sources.items():
        done = subprocess.run(
            ["dot", "-Tsvg"], input=source, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0 and done.stderr == "", f"{name}: {done.stderr}"


# Collisions in a Graphviz layout, read from `dot -Tjson`: the boxes of the labels (each
# text line's width and font size), of the nodes, and points along every edge's curve.
Box = tuple[float, float, float, float]


def _text_box(ops: list[dict[str, Any]]) -> Box | None:
    size, boxes = 14.0, []
    for op in ops:
        if op["op"] == "F":
            size = op["size"]
        elif op["op"] == "T":
            (x, y), width = op["pt"], op["width"]
            left = {"c": x - width / 2, "l": x, "r": x - width}[op["align"]]
            boxes.append((left, y - 0.2 * size, left + width, y + 0.8 * size))
    if not boxes:
        return None
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _curve(points: list[list[float]]) -> list[tuple[float, float]]:
    """Points along a Graphviz B-spline (cubic Bezier pieces), at most 1 pt apart."""
    out = []
    for i in range(0, len(points) - 3, 3):
        (x0, y0), (x1, y1), (x2, y2), (x3, y3) = points[i : i + 4]
        hull = sum(
            ((q[0] - p[0]) ** 2 + (q[1] - p[1]) ** 2) ** 0.5
            for p, q in zip(points[i : i + 3], points[i + 1 : i + 4], strict=True)
        )
        steps = max(int(hull), 1)
        for k in range(steps + 1):
            t = k / steps
            a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
            out.append((a * x0 + b * x1 + c * x2 + d * x3, a * y0 + b * y1 + c * y2 + d * y3))
    return out


def _overlap(a: Box, b: Box, margin: float = 0.0) -> bool:
    return (
        a[0] < b[2] - margin
        and b[0] < a[2] - margin
        and a[1] < b[3] - margin
        and b[1] < a[3] - margin
    )


def _inside(point: tuple[float, float], box: Box, margin: float) -> bool:
    return box[0] + margin < point[0] < box[2] - margin and box[1] + margin < point[1] < (
        box[3] - margin
    )


def collisions(dot_source: str) -> list[str]:
    """Labels over labels, nodes or a group's border; edges through labels or nodes."""
    layout = json.loads(
        subprocess.run(
            ["dot", "-Tjson"], input=dot_source, capture_output=True, text=True, check=True
        ).stdout
    )
    objects = layout.get("objects", [])
    nodes: dict[str, Box] = {}
    labels: dict[str, tuple[Box, set[str]]] = {}
    clusters: dict[str, Box] = {}
    for obj in objects:
        if obj["name"].startswith("cluster"):
            box = _text_box(obj.get("_ldraw_", []))
            if box:
                labels[f"{obj['name']} label"] = (box, set())
            left, bottom, right, top = map(float, obj["bb"].split(","))
            clusters[obj["name"]] = (left, bottom, right, top)
            continue
        x, y = map(float, obj["pos"].split(","))
        w, h = float(obj["width"]) * 36, float(obj["height"]) * 36
        nodes[obj["name"]] = (x - w, y - h, x + w, y + h)
    names = {o["_gvid"]: o["name"] for o in objects}
    title = _text_box(layout.get("_ldraw_", []))
    if title:
        labels["the graph's label"] = (title, set())
    curves = {}
    for index, edge in enumerate(layout.get("edges", [])):
        ends = {names[edge["tail"]], names[edge["head"]]}
        key = f"{names[edge['tail']]} -> {names[edge['head']]} (#{index})"
        box = _text_box(edge.get("_ldraw_", []))
        if box:
            labels[f"label of {key}"] = (box, ends)
        points = [p for op in edge.get("_draw_", []) if op["op"] == "b" for p in op["points"]]
        curves[key] = (_curve(points), ends)
    found = []
    items = sorted(labels.items())
    for i, (a, (a_box, _)) in enumerate(items):
        found += [f"{a} overlaps {b}" for b, (b_box, _) in items[i + 1 :] if _overlap(a_box, b_box)]
        found += [f"{a} overlaps node {n}" for n, box in nodes.items() if _overlap(a_box, box, 1)]
    for name, (box, _) in items:  # a label is in a group's box or clear of it
        for cluster, area in clusters.items():
            inside = area[0] <= box[0] and box[2] <= area[2] and area[1] <= box[1]
            if _overlap(box, area) and not (inside and box[3] <= area[3]):
                found.append(f"{name} crosses the border of {cluster}")
    for key, (points, ends) in curves.items():
        for name, (box, _) in items:
            if name != f"label of {key}" and any(_inside(p, box, 1) for p in points):
                found.append(f"edge {key} crosses {name}")
        for node, box in nodes.items():
            if node not in ends and any(_inside(p, box, 3) for p in points):
                found.append(f"edge {key} crosses node {node}")
    return found


@pytest.mark.parametrize("name", sorted(REVIEWS))
def test_review_layouts_have_no_collisions(name: str) -> None:
    """The payout, the demo's flow and the lifecycle, as `jobcharts render` draws them:
    no label over a label or a node, no edge through a label or a node."""
    needs_dot()
    assert collisions(reviewed(name)) == []
    chart, badge = REVIEWS[name]
    first = chart().initial.name
    overlay = Overlay(
        jobs={first: 3},
        oldest={first: timedelta(minutes=5)},
        taken={(t.trigger, first, t.dest): 3 for t in chart().transitions if first in t.sources},
    )
    assert collisions(to_dot(chart(), overlay, view="review", badges=badge())) == []


def test_the_other_charts_of_the_docs_lay_out_without_collisions() -> None:
    """The order flow of docs/deploys.md, both versions, as `render --app` draws them."""
    needs_dot()
    from docs.examples import orders_v1, orders_v2

    v1 = orders_v1.engine.registry.get("order")
    assert collisions(to_dot(v1.chart, view="review", badges=badges(v1))) == []
    assert collisions(to_dot(orders_v2.chart(orders_v2.MIGRATIONS), view="review")) == []


def test_the_collision_check_sees_the_full_views_clutter() -> None:
    """The check can fail: the full view of the payout, whose loops' labels collide."""
    needs_dot()
    found = collisions(to_dot(payout_chart()))
    assert any("charge -> charge" in line for line in found), found


def test_badges_say_attempts_backoff_and_timeout() -> None:
    assert policy_text(RetryPolicy(max_attempts=3, base=1.0, jitter=0), 30.0) == (
        "3 attempts, 1s x2, 30s"
    )
    assert policy_text(RetryPolicy(max_attempts=10, base=1, cap=60), 600) == (
        "10 attempts, 1s x2 up to 1min, 10min"
    )
    assert policy_text(RetryPolicy(max_attempts=7, base=1, cap=32), 5) == "7 attempts, 1s x2, 5s"
    assert policy_text(RetryPolicy(max_attempts=1), 60) == "1 attempt, 1min"
    assert policy_text(RetryPolicy(max_attempts=2, base=5, factor=1), 1) == "2 attempts, 5s, 1s"
    assert policy_text(RetryPolicy(max_attempts=2, base=0), 1) == "2 attempts, no backoff, 1s"
    assert policy_text(RetryPolicy(max_attempts=2, permanent=(KeyError, ValueError)), 1) == (
        "2 attempts, 1s x2, 1s\npermanent: KeyError, ValueError"
    )
    assert policy_text(NoRetry("the gateway has no idempotency key"), 30) == (
        "1 attempt, 30s\nno retry: the gateway has no idempotency key"
    )
    assert payout_badges() == {
        "charge": "3 attempts, 1s x2, 30s",
        "await_settlement": "5 attempts, 1s x2, 30s",
        "notify": "5 attempts, 1s x2, 30s",
        "refund": "10 attempts, 1s x2, 30s",
    }
    demo = build_demo()
    assert chart_badges(demo.registry.specs, "lifecycle") == {"running": VARIES}
    assert chart_badges(demo.registry.specs, "shipping") == shipping_badges()
    assert chart_badges(demo.registry.specs, "nothing") == {}


def test_cli_draws_the_review_view_with_the_apps_badges(tmp_path: Path) -> None:
    runner = CliRunner()
    app = ["--app", "docs.examples.payout:engine"]
    result = runner.invoke(cli, ["render", "payout", *app])
    assert result.exit_code == 0 and result.output == reviewed("payout")
    result = runner.invoke(cli, ["render", "payout", *app, "--format", "mermaid"])
    assert result.exit_code == 0 and result.output == reviewed("payout", "mmd")
    result = runner.invoke(cli, ["render", "payout", *app, "--view", "full"])
    assert result.exit_code == 0 and result.output == to_dot(payout_chart())
    demo = ["--app", "engine.demo:build"]
    result = runner.invoke(cli, ["render", "ship_order", *demo])
    assert result.exit_code == 0 and result.output == reviewed("shipping")
    result = runner.invoke(cli, ["render", "lifecycle", *demo])  # shared by kinds
    assert result.exit_code == 0 and VARIES in result.output
    result = runner.invoke(cli, ["render", "greet", *demo])
    assert result.exit_code == 0 and "4 attempts, 0.05s x2, 1min" in result.output


def test_the_docs_show_pngs_of_both_views() -> None:
    """docs/mapper.md shows the PNGs `jobcharts render` made (see its commands)."""
    text = (DOCS / "mapper.md").read_text()
    for name in ("payout-review", "payout-full", "shipping-review", "lifecycle-review"):
        assert f"diagrams/{name}.png" in text
        assert (DOCS / "diagrams" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
