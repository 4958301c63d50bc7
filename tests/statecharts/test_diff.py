"""Chart diffs: renames, removals, added steps, changed timers and migrations, as a summary,
DOT (accepted by Graphviz), Mermaid (parsed by Mermaid's own parser) and Markdown; and
`jobcharts diff` against another app module, a git revision and a database's recorded
versions (with the jobs in flight), its exit status saying whether anything changed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from statecharts import Final, Migration, Poll, Wait, Work, flow
from statecharts.diff import diff_charts, to_dot, to_markdown, to_mermaid

ROOT = Path(__file__).resolve().parents[2]
MERMAID = ROOT / "tests" / "mermaid"


def v1() -> object:
    return flow(
        "order",
        Work("validate", on={"ok": "audit"}),
        Work("audit", on={"audited": "charge"}),
        Work("charge", on={"charged": "hold"}),
        Wait("hold", delay=60, then="ship"),
        Poll("ship", every=10, deadline=600, on={"shipped": "succeeded"}),
    )


def v2() -> object:
    return flow(
        "order",
        Work("validate", on={"ok": "charge"}),  # audit removed
        Work("charge", on={"charged": "cool_off", "declined": "declined"}),  # new outcome
        Wait("cool_off", delay=60, then="ship"),  # hold renamed
        Poll("ship", every=30, deadline=600, on={"shipped": "succeeded"}),  # timer changed
        Final("declined", success=False),  # added
        migrations=[Migration("hold", "cool_off", keep_due=True), Migration("audit", "charge")],
    )


def test_the_summary_lists_what_changed_and_nothing_else() -> None:
    diff = diff_charts(v1(), v2(), {"hold": 4})  # type: ignore[arg-type]
    assert diff.changed
    assert diff.summary() == [
        "- state audit",
        "+ state cool_off",
        "+ state declined",
        "- state hold (4 job(s) in flight)",
        "~ state ship (every 10 -> 30)",
        "- audit --audited--> charge",
        "+ charge --charged--> cool_off",
        "- charge --charged--> hold",
        "+ charge --declined--> declined",
        "+ cool_off --elapsed--> ship",
        "- hold --elapsed--> ship",
        "- validate --ok--> audit",
        "+ validate --ok--> charge",
        "-> migrate hold => cool_off (4 job(s) in flight)",
        "-> migrate audit => charge",
    ]
    same = diff_charts(v1(), v1())  # type: ignore[arg-type]
    assert not same.changed and same.summary() == []
    assert to_markdown(same).endswith("no change\n")


def test_the_drawings_mark_each_change_in_text_and_colour() -> None:
    diff = diff_charts(v1(), v2(), {"hold": 4})  # type: ignore[arg-type]
    dot = to_dot(diff)
    assert '"hold" [label="- hold\\n(4 in flight)"' in dot
    assert '"cool_off" [label="+ cool_off"' in dot and '"ship" [label="~ ship"' in dot
    assert '"hold" -> "cool_off" [label="-> migrate"' in dot
    assert "fail_permanent" not in dot and "release" not in dot  # plumbing left out
    mermaid = to_mermaid(diff)
    assert mermaid.startswith("flowchart LR") and ":::removed" in mermaid
    assert '==>|"-> migrate"|' in mermaid
    markdown = to_markdown(diff, "Chart `order`: main -> this branch")
    assert markdown.startswith("### Chart `order`: main -> this branch")
    assert "```mermaid\nflowchart LR" in markdown


def test_graphviz_accepts_the_dot() -> None:
    if shutil.which("dot") is None:
        if os.environ.get("JOBCHARTS_CI"):
            pytest.fail("Graphviz's dot is required in CI")
        pytest.skip("Graphviz's dot is not installed")
    dot = to_dot(diff_charts(v1(), v2()))  # type: ignore[arg-type]
    done = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "<svg" in done.stdout


def test_mermaids_own_parser_accepts_the_diagram(tmp_path: Path) -> None:
    if shutil.which("node") is None or not (MERMAID / "node_modules" / "mermaid").is_dir():
        if os.environ.get("JOBCHARTS_CI"):
            pytest.fail("Node.js and tests/mermaid's packages are required in CI")
        pytest.skip("Mermaid's parser is not installed (needs npm; see scripts/setup.sh)")
    good = tmp_path / "diff.mmd"
    good.write_text(to_mermaid(diff_charts(v1(), v2(), {"hold": 2})))  # type: ignore[arg-type]
    broken = tmp_path / "broken.mmd"
    broken.write_text("flowchart LR\n  a -->|unclosed b\n")
    done = subprocess.run(
        ["node", str(MERMAID / "parse.mjs"), str(good), str(broken)],
        capture_output=True,
        text=True,
        cwd=MERMAID,
    )
    assert f"ok {good}" in done.stdout and f"FAIL {broken}" in done.stdout, done.stdout


def jobcharts(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHARTS_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def test_diff_against_another_app_module_exits_1_when_changed() -> None:
    changed = jobcharts(
        "diff",
        "order",
        "--app",
        "docs.examples.orders_v2:engine",
        "--against-app",
        "docs.examples.orders_v1:engine",
    )
    assert changed.returncode == 1, changed.stderr
    assert "- state audit" in changed.stdout and "-> migrate hold => cool_off" in changed.stdout
    same = jobcharts(
        "diff",
        "order",
        "--app",
        "docs.examples.orders_v2:engine",
        "--against-app",
        "docs.examples.orders_v2:engine_without_migrations",
    )
    # The same structure: its migrations name no state of the other version, so no change.
    assert (same.returncode, same.stdout) == (0, "no change\n")
    none = jobcharts(
        "diff",
        "order",
        "--app",
        "docs.examples.orders_v1:engine",
        "--against-app",
        "docs.examples.orders_v1:engine",
    )
    assert (none.returncode, none.stdout) == (0, "no change\n")
    bad = jobcharts("diff", "order", "--app", "docs.examples.orders_v1:engine")
    assert bad.returncode == 2 and "give one of" in bad.stderr


def test_diff_against_a_git_revision(tmp_path: Path) -> None:
    """A repository whose app module changes between two commits."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    app = repo / "shop.py"
    source = (ROOT / "docs" / "examples" / "orders_v1.py").read_text()
    app.write_text(source)

    def run(*args: str) -> None:
        subprocess.run([git, *args], cwd=repo, check=True, capture_output=True)

    run("init", "-q")
    run("-c", "user.email=t@t", "-c", "user.name=t", "add", "shop.py")
    run("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "v1")
    app.write_text(
        source.replace('Work("audit", on={"audited": "charge"}),\n', "")
        .replace('on={"ok": "audit"}', 'on={"ok": "charge"}')
        .replace('    "audit": step("audited"),\n', "")
        .replace('"audit": step("audited"),', "")
    )
    done = jobcharts(
        "diff", "order", "--app", "shop:engine", "--git", "HEAD", "--format", "md", cwd=repo
    )
    assert done.returncode == 1, done.stderr
    assert "### Chart `order`: HEAD -> working tree" in done.stdout
    assert "- `- state audit`" in done.stdout and "```mermaid" in done.stdout


GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("suffix", ["txt", "dot", "mmd", "md"])
def test_the_diff_matches_its_golden_file(suffix: str) -> None:
    """A rename, a removal, an added step and outcome, a changed timer and two migrations,
    drawn in every format: a change to the output is a change to review."""
    diff = diff_charts(v1(), v2(), {"hold": 4, "audit": 1})  # type: ignore[arg-type]
    text = {
        "txt": "\n".join(diff.summary()) + "\n",
        "dot": to_dot(diff),
        "mmd": to_mermaid(diff),
        "md": to_markdown(diff, "Chart `order`: v1 -> v2"),
    }[suffix]
    path = GOLDEN / f"order.diff.{suffix}"
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{path} is stale (UPDATE_GOLDEN=1 rewrites it)"


def test_a_changed_retry_policy_is_a_changed_state() -> None:
    """The apps' policies per state (not part of a chart) are compared when both apps are
    at hand: a lowered budget marks its states changed, with what it was and is."""
    chart = v1()
    same = diff_charts(chart, chart, policies=({"charge": "5 attempts"}, {"charge": "5 attempts"}))  # type: ignore[arg-type]
    assert not same.changed
    lowered = diff_charts(
        chart, chart, policies=({"charge": "5 attempts"}, {"charge": "3 attempts"})
    )  # type: ignore[arg-type]
    assert lowered.summary() == ["~ state charge (retries 5 attempts -> 3 attempts)"]
    done = jobcharts(
        "diff",
        "order",
        "--app",
        "tests.statecharts.policy_app:three",
        "--against-app",
        "tests.statecharts.policy_app:five",
    )
    assert done.returncode == 1, done.stderr
    assert (
        "~ state charge (retries 5 attempts, 1s x2 up to 300s, timeout 60s -> "
        "3 attempts, 1s x2 up to 300s, timeout 60s)"
    ) in done.stdout.splitlines()
