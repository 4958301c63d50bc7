"""Diagrams: golden DOT, Mermaid and Markdown for two charts; images; deterministic output."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from docs.examples.payout import payout_chart
from engine.cli import cli
from statecharts import Chart, Final, Work, flow, lifecycle
from statecharts.render import Overlay, RenderError, render, to_dot, to_markdown, to_mermaid

GOLDEN = Path(__file__).with_name("golden")
CHARTS = {"lifecycle": lifecycle, "payout": payout_chart}
WRITERS = {"dot": to_dot, "mmd": to_mermaid, "md": to_markdown}


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
    assert result.exit_code == 0 and result.output == to_mermaid(lifecycle())
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
