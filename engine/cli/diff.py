"""``jobcharts diff``: what a change does to a chart, against another version of it: the app
at a git revision, another app module, or a version recorded in a database (which also
counts the jobs in flight in each removed state).

Exit status: 0 nothing changed, 1 the chart changed, 2 the comparison could not be made.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path
from typing import Any, NoReturn

import click

from engine.cli.common import app_option, cli, load_app, open_engine
from statecharts import Chart
from statecharts.diff import diff_charts, to_dot, to_markdown, to_mermaid
from statecharts.versions import chart_from_markup


def _fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


def _chart(engine: Any, name: str) -> Chart:
    spec = engine.registry.find(name)
    chart = spec.chart if spec is not None else engine.chart_of(name)
    if chart is None:
        _fail(f"no chart or job kind named {name!r} in the app")
    return chart  # type: ignore[no-any-return]


# Run in a subprocess on the other version's code, whichever jobcharts that code uses: it
# reads the chart's attributes itself, so an older jobcharts needs no command of ours.
MARKUP_SCRIPT = """
import json, sys
from engine.app import load_app
engine = load_app(sys.argv[1])
spec = engine.registry.find(sys.argv[2])
chart = spec.chart if spec is not None else engine.chart_of(sys.argv[2])
if chart is None:
    sys.exit(f"no chart or job kind named {sys.argv[2]!r}")
steps = {}
for spec in engine.registry.specs:
    if spec.chart.name == chart.name and (spec.kind == sys.argv[2] or not steps):
        steps = {s: [st.retry.max_attempts, st.retry.base, st.retry.factor, st.retry.cap,
                     st.timeout] for s, st in spec.steps.items()}
print(json.dumps({
    "policies": steps,
    "name": chart.name,
    "states": [{"name": s.name, "kind": str(getattr(s.kind, "value", s.kind)),
                "success": s.success, "every": getattr(s, "every", None),
                "deadline": getattr(s, "deadline", None), "delay": getattr(s, "delay", None)}
               for s in chart.states],
    "transitions": [{"trigger": t.trigger, "sources": list(t.sources), "dest": t.dest,
                     "guards": [[g.name, getattr(g, "bounds", None)] for g in t.guards],
                     "effects": [str(getattr(e, "value", e)) for e in t.effects],
                     "operator": t.operator} for t in chart.transitions],
}))
"""


def policy_text(numbers: list[float]) -> str:
    """``[attempts, base, factor, cap, timeout]`` as a reviewer reads it."""
    attempts, base, factor, cap, timeout = numbers
    return f"{int(attempts)} attempts, {base:g}s x{factor:g} up to {cap:g}s, timeout {timeout:g}s"


def policies_of(engine: Any, name: str) -> dict[str, str]:
    """The retry policy and timeout per state of the kind ``name`` (or of the first kind
    using the chart ``name``), as text."""
    specs = [s for s in engine.registry.specs if s.chart.name == name or s.kind == name]
    chosen = next((s for s in specs if s.kind == name), specs[0] if specs else None)
    if chosen is None:
        return {}
    return {
        state: policy_text(
            [st.retry.max_attempts, st.retry.base, st.retry.factor, st.retry.cap, st.timeout]
        )
        for state, st in chosen.steps.items()
    }


def _markup_elsewhere(name: str, app: str, root: Path) -> tuple[Chart, dict[str, str]]:
    """The chart ``name`` of ``app`` as the code under ``root`` declares it, with its
    policies per state (a subprocess, so the two versions of one module never meet in this
    interpreter)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(  # noqa: S603 - our own interpreter, our own script
        [sys.executable, "-c", MARKUP_SCRIPT, app, name],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        _fail(f"cannot load {app} from {root}: {last}")
    found = json.loads(done.stdout)
    policies = {k: policy_text(v) for k, v in found.get("policies", {}).items()}
    return chart_from_markup(found), policies


def _at_revision(name: str, app: str, revision: str) -> tuple[Chart, dict[str, str]]:
    """The chart as the app declares it at git ``revision`` of the current repository."""
    git = shutil.which("git")
    if git is None:
        _fail("--git needs git on the PATH")
    try:
        top = subprocess.run(  # noqa: S603 - git, on the user's own repository
            [str(git), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        ).stdout.strip()
        archive = subprocess.run(  # noqa: S603
            [str(git), "archive", "--format=tar", revision],
            cwd=top,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        stderr = getattr(error, "stderr", b"") or b""
        text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else str(stderr)
        _fail(f"cannot read git revision {revision!r}: {text.strip() or error}")
    with tempfile.TemporaryDirectory(prefix="jobcharts-diff-") as tmp:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        relative = Path.cwd().resolve().relative_to(Path(top).resolve())
        return _markup_elsewhere(name, app, Path(tmp) / relative)


@cli.command()
@click.argument("name")
@app_option(required=True)
@click.option("--git", "revision", default=None, help="Compare with the app at this git revision.")
@click.option("--against-app", default=None, help="Compare with another app module:attribute.")
@click.option("--db", default=None, help="Compare with a version recorded in this database.")
@click.option("--version", "version", default=None, help="With --db: the recorded version.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "md", "mermaid", "dot", "svg", "png"]),
    default="text",
    show_default=True,
)
@click.option("--out", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
def diff(
    name: str,
    app: str,
    revision: str | None,
    against_app: str | None,
    db: str | None,
    version: str | None,
    fmt: str,
    out: str | None,
) -> None:
    """What the app's chart NAME changes against another version of it (exit 1: changed)."""
    sources = [s for s in (revision, against_app, db) if s]
    if len(sources) != 1:
        _fail("give one of --git REV, --against-app SPEC or --db URL")
    new_app = load_app(app)
    new = _chart(new_app, name)
    in_flight: dict[str, int] = {}
    policies = None
    title = None
    if revision:
        old, was = _at_revision(name, app, revision)
        policies = (was, policies_of(new_app, name))
        title = f"Chart `{new.name}`: {revision} -> working tree"
    elif against_app:
        old, was = _markup_elsewhere(name, against_app, Path.cwd())
        policies = (was, policies_of(new_app, name))
        title = f"Chart `{new.name}`: {against_app} -> {app}"
    else:
        reader = open_engine(app, db, existing=True)
        try:
            recorded = reader.store.chart_versions_of(new.name)
            current = reader.registry.versions.get(new.name, (new, ""))[1]
            others = [v for v in recorded.values() if v.version != current]
            chosen = recorded.get(version) if version else (others[-1] if others else None)
            if chosen is None:
                _fail(
                    f"no recorded version {version or '(other than the current one)'} of "
                    f"chart {new.name!r} in this database; recorded: {sorted(recorded)}"
                )
            old = chart_from_markup(chosen.markup, chosen.label or "")
            for group in reader.store.job_in_flight(
                [s.kind for s in reader.registry.specs if s.chart.name == new.name]
            ):
                in_flight[group.state] = in_flight.get(group.state, 0) + group.jobs
            title = f"Chart `{new.name}`: version {chosen.version} -> {current}"
        finally:
            reader.close()
    result = diff_charts(old, new, in_flight, policies)
    if fmt == "text":
        text = "\n".join(result.summary()) or "no change"
        data = (text + "\n").encode()
    elif fmt == "md":
        data = to_markdown(result, title).encode()
    elif fmt == "mermaid":
        data = to_mermaid(result).encode()
    else:
        dot = to_dot(result)
        data = dot.encode() if fmt == "dot" else _image(dot, fmt)
    if out:
        Path(out).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    sys.exit(1 if result.changed else 0)


def _image(dot: str, fmt: str) -> bytes:
    import graphviz

    try:
        return bytes(graphviz.Source(dot).pipe(format=fmt))
    except graphviz.ExecutableNotFound:
        _fail(
            "SVG and PNG need Graphviz's dot: apt-get install graphviz (or brew install graphviz)"
        )
        raise
