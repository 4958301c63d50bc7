"""``jobcharts gen-tests``: pytest files that drive the real engine along a chart's paths.

For each chart, ``statecharts.testing.covering_paths`` yields paths that together take
every declared transition. A generated test replays one path against the REAL engine: a
temporary SQLite file, a frozen clock, and handlers whose outcomes are scripted by the
path (return an outcome, raise, raise Permanent, ask to be cancelled). Lease events are
produced the way they happen in production: a claim that never starts, or a started
attempt whose lease runs out, found by the rescue. The test then checks that the job's
persisted history is exactly the path. Each file also checks that its paths still cover
the chart, so a chart changed without regenerating its tests fails.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from engine.app import load_app
from engine.attempt import run_attempt
from engine.clock import FrozenClock
from engine.engine import Engine
from engine.errors import JobchartsError, Permanent
from engine.registry import Invariant, StepHandler
from engine.retry import RetryPolicy
from statecharts import Chart, Step, T, handler_states
from statecharts.testing import (
    DEADLINE_PASSES,
    covering_paths,
    declared_edges,
    recorded,
    uncovered,
)

MAX_ATTEMPTS = 2  # the budget of every step in the explored model and in the replay
KIND = "generated"
LEASE = 30.0

PathData = Sequence[Sequence[Any]]  # [[trigger, source, dest], ...] as written in the files


class Stuck(AssertionError):
    """The path's next step cannot be taken: the engine left the path earlier."""


class Script:
    """The outcomes the next handler runs will produce, in order."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.outcomes: list[str] = []

    def handler(self, ctx: Any, _payload: Any) -> Any:
        outcome = self.outcomes.pop(0)
        if outcome == T.FAIL:
            raise RuntimeError("scripted failure")
        if outcome == T.FAIL_PERMANENT:
            raise Permanent("scripted permanent failure")
        if outcome == T.CANCEL:
            self.engine.cancel(ctx.job_id)  # an operator, while the handler runs
            ctx.step("after the cancel", lambda: None)  # raises Cancelled
        if outcome in (T.SUCCEED, T.WAIT):
            return None
        return outcome


def is_flow(chart: Chart) -> bool:
    """Flow handlers return their outcome; lifecycle-style charts fire ``succeed``."""
    return T.SUCCEED not in chart.triggers


def register(engine: Engine, chart: Chart, script: Script, *, use_async: bool = False) -> None:
    """Register the scripted kind; ``use_async``: as ``async def`` handlers (the app's are),
    so every path also runs through the worker's event loop."""
    retry = RetryPolicy(max_attempts=MAX_ATTEMPTS, base=1.0, factor=1.0, jitter=0.0)
    why = Invariant("generated tests script every outcome")

    async def scripted(ctx: Any, payload: Any) -> Any:
        return script.handler(ctx, payload)

    handler = scripted if use_async else script.handler
    if is_flow(chart):
        handlers = {s: StepHandler(handler) for s in handler_states(chart)}
        engine.flow(KIND, chart, handlers, idempotency=why, retry=retry, timeout=LEASE)
    else:
        engine.job(kind=KIND, chart=chart, idempotency=why, retry=retry, timeout=LEASE)(handler)


def replay(chart: Chart, path: PathData, db_file: Path, *, use_async: bool = False) -> None:
    """Drive the real engine along ``path``; fail unless its history is exactly the path.
    ``use_async``: the scripted handlers are ``async def`` (as the app's are)."""
    steps = [Step(str(t), None if s is None else str(s), str(d)) for t, s, d in path]
    clock = FrozenClock()
    engine = Engine(f"sqlite:///{db_file}", lease_seconds=LEASE, seed=0, clock=clock)
    script = Script(engine)
    register(engine, chart, script, use_async=use_async)
    try:
        job = engine.enqueue(KIND)
        stuck = ""
        try:
            _drive(engine, clock, script, job, steps)
        except (
            Stuck,
            JobchartsError,
        ) as error:  # the engine went elsewhere: the diff below shows where
            stuck = f"\n(driving stopped: {error})"
        history = [(e.trigger, e.from_state, e.to_state) for e in engine.get(job).history]
        expected = [(s.trigger, s.source, s.dest) for s in recorded(steps)]
        assert history == expected, _diff(expected, history) + stuck
    finally:
        engine.close()


def replay_migration(chart: Chart, old: str, new: str, db_file: Path) -> None:
    """A job of an older version left in ``old`` (a state this chart lacks): the real
    engine's sweep moves it to ``new`` by one ``migrate`` event, and its history stays a
    valid path through both versions."""
    clock = FrozenClock()
    engine = Engine(f"sqlite:///{db_file}", lease_seconds=LEASE, seed=0, clock=clock)
    register(engine, chart, Script(engine))
    try:
        job = engine.enqueue(KIND)
        previous = "0" * 12  # an older version, its markup not needed: old states only
        engine.store.job_force_state(job, old, previous)
        engine.sweep_strays()
        view = engine.get(job)
        version = engine.registry.get(KIND).version
        last = view.history[-1]
        assert (view.state, last.trigger, last.from_state) == (new, "migrate", old), view.history
        assert last.detail is not None and last.detail["chart_version"] == [previous, version]
        assert view.chart_version == version
    finally:
        engine.close()


def _drive(engine: Engine, clock: FrozenClock, script: Script, job: int, steps: list[Step]) -> None:
    index = 1  # steps[0] is the creation
    while index < len(steps):
        step = steps[index]
        if step.trigger == DEADLINE_PASSES:
            clock.set(_deadline(engine, job))
            index += 1
        elif step.trigger == T.START:
            index = _attempt(engine, clock, script, job, steps, index)
        elif step.trigger in (T.DEADLINE, T.ELAPSED):
            due_at = engine.get(job).due_at
            if due_at is not None and due_at > clock.now():
                clock.set(due_at)
            engine.tick(limit=1)
            index += 1
        elif step.trigger == T.CANCEL:
            engine.cancel(job)
            index += 1
        elif step.trigger == T.REQUEUE:
            engine.requeue(job)
            index += 1
        else:
            raise Stuck(f"step {index} ({step.trigger}) cannot be driven here")


def _attempt(
    engine: Engine, clock: FrozenClock, script: Script, job: int, steps: list[Step], index: int
) -> int:
    """A claim (steps[index] is its start) and what follows it; returns the next index."""
    row = engine.store.job_get(job)
    assert row is not None
    if row.due_at is not None and row.due_at > clock.now():
        clock.set(row.due_at)  # a retry's backoff passes
    batch = engine.claim(clock.now(), 1)
    if len(batch.jobs) != 1:
        raise Stuck(f"step {index} ({steps[index].trigger}): the engine claimed nothing")
    index += 1
    following = steps[index].trigger if index < len(steps) else None
    if following == T.RELEASE:  # claimed, never started: the lease runs out
        clock.advance(timedelta(seconds=LEASE + 1))
        engine.rescue(clock.now())
        return index + 1
    started = engine.mark_started(batch, batch.jobs, clock.now())
    if [c.job_id for c in started] != [job]:
        raise Stuck(f"step {index}: the engine did not start the claimed handler")
    if following is None:
        return index  # the path ends with the job running
    if following == T.EXPIRE:  # started, then the worker died: the lease runs out
        clock.advance(timedelta(seconds=LEASE + 1))
        engine.rescue(clock.now())
        return index + 1
    while following == DEADLINE_PASSES:  # the handler ran past the deadline
        clock.set(_deadline(engine, job))
        index += 1
        following = steps[index].trigger
    script.outcomes.append(following)
    outcome = run_attempt(started[0], engine.store, clock.now, engine.telemetry)
    engine.commit([outcome], clock.now())
    return index + 1


def _deadline(engine: Engine, job: int) -> datetime:
    """The deadline of the state the job is in; a path that passes one must have one."""
    deadline = engine.get(job).deadline
    if deadline is None:
        raise Stuck(f"job {job} is in a state without a deadline")
    return deadline


def _diff(expected: list[Any], got: list[Any]) -> str:
    lines = ["the persisted history is not the path:"]
    for i in range(max(len(expected), len(got))):
        want = expected[i] if i < len(expected) else "-"
        have = got[i] if i < len(got) else "-"
        mark = "  " if want == have else "!!"
        lines.append(f"{mark} {i:2} expected {want}  got {have}")
    return "\n".join(lines)


# -- the generator -----------------------------------------------------------------------

TEMPLATE = '''"""Generated by `jobcharts gen-tests` from chart {chart!r} of
{app}. Do not edit.

{count} paths take every transition of the chart. Each test drives the real engine (a
temporary SQLite file, a frozen clock, scripted handler outcomes) along one path and checks
that the persisted history is exactly that path; each declared migration is replayed on a
job of an older version. Regenerate when the chart changes:
    jobcharts gen-tests --app {app} --out {out}
"""

from pathlib import Path

import pytest

from engine.gentests import app_chart, check_coverage, replay, replay_migration

APP = {app_literal}
CHART = {chart_literal}
PATHS = {paths}
MIGRATIONS = {migrations}
ASYNC = {use_async}  # the app's handlers of this chart are async def: so are the scripted


@pytest.mark.parametrize("path", PATHS, ids=[f"path{{i}}" for i in range(len(PATHS))])
def test_engine_follows_path(path: list, tmp_path: Path) -> None:
    replay(app_chart(APP, CHART), path, tmp_path / "jobs.db", use_async=ASYNC)


def test_paths_still_cover_the_chart() -> None:
    check_coverage(app_chart(APP, CHART), PATHS)


@pytest.mark.parametrize("old,new", MIGRATIONS or [pytest.param(None, None, marks=pytest.mark.skip(
    reason="the chart declares no migration"))])
def test_engine_migrates_older_jobs(old: str, new: str, tmp_path: Path) -> None:
    replay_migration(app_chart(APP, CHART), old, new, tmp_path / "jobs.db")


def test_migrations_are_the_ones_declared() -> None:
    declared = [[m.old, m.new] for m in app_chart(APP, CHART).migrations]
    assert declared == MIGRATIONS, "the chart's migrations changed: regenerate"
'''


def app_chart(app: str, name: str) -> Chart:
    """The chart ``name`` of the app ``module:engine``, as the engine registered it."""
    chart = load_app(app).chart_of(name)
    if chart is None:
        raise LookupError(f"{app} has no chart named {name!r}")
    return chart


def check_coverage(chart: Chart, paths: PathData) -> None:
    """Fail when the chart has a transition the generator would now reach but no generated
    path takes: the chart changed since the tests were written."""
    steps = [[Step(str(t), s, str(d)) for t, s, d in p] for p in paths]
    reachable = declared_edges(chart) - uncovered(chart, covering_paths(chart))
    missing = reachable & uncovered(chart, steps)
    assert not missing, f"transitions no generated test takes (regenerate): {sorted(missing)}"


def unreachable(chart: Chart) -> set[tuple[str, str, str]]:
    """Declared transitions the generator's model cannot reach (guards on facts it holds
    fixed: the error class, a job not yet due, more than MAX_ATTEMPTS attempts)."""
    return uncovered(chart, covering_paths(chart, max_attempts=MAX_ATTEMPTS))


def generate(app: str, charts: Sequence[Chart], out: Path) -> list[Path]:
    """Write one test file per chart into ``out``; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    specs = load_app(app).registry.specs
    for chart in charts:
        use_async = any(
            inspect.iscoroutinefunction(step.handler)
            for spec in specs
            if spec.chart.name == chart.name
            for step in spec.steps.values()
        )
        paths = covering_paths(chart, max_attempts=MAX_ATTEMPTS)
        data = [[[s.trigger, s.source, s.dest] for s in p] for p in paths]
        text = TEMPLATE.format(
            chart=chart.name,
            app=app,
            app_literal=json.dumps(app),
            chart_literal=json.dumps(chart.name),
            out=out,
            count=len(paths),
            paths=_format_paths(data),
            migrations=json.dumps([[m.old, m.new] for m in chart.migrations]),
            use_async=use_async,
        )
        target = out / f"test_chart_{re.sub(r'[^0-9A-Za-z_]', '_', chart.name)}.py"
        target.write_text(text)
        written.append(target)
    return written


def _format_paths(data: list[list[list[Any]]]) -> str:
    lines = ["["]
    for path in data:
        lines.append("    [")
        lines += [f"        {json.dumps(step).replace('null', 'None')}," for step in path]
        lines.append("    ],")
    lines.append("]")
    return "\n".join(lines)
