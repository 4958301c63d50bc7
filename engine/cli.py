"""The ``jobcharts`` command line: run workers, enqueue, list, inspect and requeue jobs."""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from engine import app
from engine.engine import Engine
from engine.errors import JobchartsError
from engine.logs import configure_logging
from engine.registry import Invariant
from engine.retry import RetryPolicy
from engine.store import sqlite_path
from engine.timetable import seconds_text
from engine.view import JobView
from engine.worker import Worker
from statecharts import Chart

MAX_AGE_SECONDS = 100 * 365 * 86400
SECOND_SIGNAL_AFTER = 1.0  # a repeat within this is the same stop, delivered twice
APP_HELP = "The engine to use, as module:attribute (default attribute: engine)."
DB_HELP = "Database URL (default: $JOBCHARTS_DB or sqlite:///jobcharts.db)."


def load_app(spec: str) -> Engine:
    """The app's Engine (engine.app.load_app), its failure as a usage error of ``--app``."""
    try:
        return app.load_app(spec)
    except app.AppNotLoaded as error:
        raise click.BadParameter(str(error), param_hint="--app") from error


def open_engine(app: str | None, db: str | None, *, existing: bool = False) -> Engine:
    """The app's engine (or a bare one), on ``--db`` if given.

    ``existing``: the command only reads or changes jobs, so a missing SQLite file is a
    mistake (a wrong directory or URL) to report, not a database to create.
    """
    engine = load_app(app) if app else Engine()
    if db:
        try:
            engine.bind(db)
        except JobchartsError as error:
            raise click.UsageError(f"--db {db}: {error}") from error
    if existing:
        path = sqlite_path(engine.url)
        if path is not None and not os.path.exists(path):
            raise click.ClickException(
                f"no database at {path}; pass --db URL or set JOBCHARTS_DB "
                "(or --app for an app that names its database)"
            )
    return engine


def app_option(required: bool = False) -> Any:
    return click.option("--app", envvar="JOBCHARTS_APP", required=required, help=APP_HELP)


db_option = click.option("--db", envvar="JOBCHARTS_DB", help=DB_HELP)


@click.group()
@click.option("--log-level", default="info", show_default=True, help="debug, info, warning, error.")
@click.option(
    "--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True
)
def cli(log_level: str, log_format: str) -> None:
    """jobcharts: every background job a persisted, declared, verified state machine."""
    configure_logging(log_level, log_format)


@cli.command()
@app_option(required=True)
@db_option
@click.option("--concurrency", "-c", default=1, show_default=True, help="Handler threads.")
@click.option(
    "--processes",
    "-p",
    default=1,
    show_default=True,
    help="Worker processes sharing the database (restarted if they crash).",
)
@click.option("--poll", default=1.0, show_default=True, help="Longest idle sleep, seconds.")
@click.option("--batch", default=None, type=int, help="Jobs claimed per tick.")
@click.option("--max-ticks", default=None, type=int, help="Stop after this many claim attempts.")
@click.option("--until-idle", is_flag=True, help="Exit once nothing runs and nothing is due.")
@click.option(
    "--grace", default=30.0, show_default=True, help="Seconds running handlers get on SIGTERM."
)
@click.option(
    "--lease", default=None, type=float, help="Lease length in seconds (renewed by heartbeat)."
)
@click.option(
    "--isolation",
    type=click.Choice(["thread", "process"]),
    default="thread",
    show_default=True,
    help="Run handlers in threads, or in child processes that a timeout can kill.",
)
@click.option("--queues", default=None, help="Claim only jobs of these queues (a,b,...).")
def worker(
    app: str,
    db: str | None,
    concurrency: int,
    processes: int,
    poll: float,
    batch: int | None,
    max_ticks: int | None,
    until_idle: bool,
    grace: float,
    lease: float | None,
    isolation: str,
    queues: str | None,
) -> None:
    """Run jobs until SIGINT/SIGTERM: running handlers finish (within --grace) first."""
    queue_names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    root = click.get_current_context().find_root().params
    if processes > 1:
        from engine.worker.supervisor import supervise

        child = ["--log-level", root["log_level"], "--log-format", root["log_format"], "worker"]
        child += ["--app", app, "--concurrency", str(concurrency), "--poll", str(poll)]
        child += ["--grace", str(grace), "--isolation", isolation]
        for flag, value in (
            ("--db", db),
            ("--batch", batch),
            ("--lease", lease),
            ("--queues", queues),
        ):
            if value is not None:
                child += [flag, str(value)]
        if max_ticks is not None:
            child += ["--max-ticks", str(max_ticks)]
        if until_idle:
            child.append("--until-idle")
        raise SystemExit(supervise(processes, child))
    engine = open_engine(app, db)
    if lease is not None:
        engine.lease_seconds = lease
    runner = Worker(
        engine,
        concurrency=concurrency,
        poll_interval=poll,
        batch_size=batch,
        grace=grace,
        isolation=isolation,
        app_spec=app,
        log_args=["--log-level", root["log_level"], "--log-format", root["log_format"]],
        queues=queue_names,
    )
    first_signal: list[float] = []

    def on_signal(signum: int, _frame: Any) -> None:
        # systemd signals every process of the service and the supervisor forwards too:
        # the same stop can arrive twice within moments, which is not a second request.
        now = time.monotonic()
        if first_signal and now - first_signal[0] > SECOND_SIGNAL_AFTER:
            click.echo("second signal: exiting now; unfinished leases will expire", err=True)
            os._exit(128 + signum)
        if not first_signal:
            first_signal.append(now)
            click.echo(
                "stopping after the running handlers finish (signal again to exit now)", err=True
            )
        runner.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        totals = runner.run(max_ticks=max_ticks, until_idle=until_idle)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(
        f"worker stopped: claimed {totals.claimed}, succeeded {totals.succeeded}, "
        f"retried {totals.retried}, quarantined {totals.quarantined}"
    )


@cli.command()
@click.argument("kind")
@click.argument("payload", default="{}")
@app_option(required=True)
@db_option
@click.option(
    "--delay", type=click.FloatRange(min=0), default=None, help="Seconds before the job is due."
)
@click.option("--priority", type=int, default=None, help="Higher runs first.")
@click.option("--queue", default=None)
@click.option("--correlation-id", default=None)
def enqueue(
    kind: str,
    payload: str,
    app: str,
    db: str | None,
    delay: float | None,
    priority: int | None,
    queue: str | None,
    correlation_id: str | None,
) -> None:
    """Enqueue a job of KIND with a JSON PAYLOAD; prints its id (the first id if deduplicated)."""
    engine = open_engine(app, db)
    try:
        data = json.loads(payload)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not JSON: {error}", param_hint="PAYLOAD") from error
    try:
        job_id = engine.enqueue(
            kind, data, delay=delay, priority=priority, queue=queue, correlation_id=correlation_id
        )
    except ValidationError as error:
        raise click.ClickException(
            f"invalid payload for {kind!r}, nothing stored:\n{error}"
        ) from error
    except JobchartsError as error:
        raise click.ClickException(str(error)) from error
    click.echo(job_id)


@cli.command()
@app_option()
@db_option
@click.option("--state", default=None, help="Only jobs in this state.")
@click.option("--kind", default=None, help="Only jobs of this kind.")
@click.option("--limit", default=50, show_default=True)
def jobs(app: str | None, db: str | None, state: str | None, kind: str | None, limit: int) -> None:
    """List jobs, newest first, with a count per state."""
    engine = open_engine(app, db, existing=True)
    rows = engine.store.job_list(state=state, kind=kind, limit=limit)
    click.echo(
        table(
            ["id", "kind", "state", "attempt", "due_at", "reason / last error"],
            [
                [
                    r.id,
                    r.kind,
                    r.state,
                    f"{r.attempt}/{r.max_attempts}",
                    _when(r.due_at),
                    r.quarantine_reason or ("" if r.finished_at else r.last_error_class or ""),
                ]
                for r in rows
            ],
        )
    )
    counts = engine.store.job_count_by_state()
    click.echo("  ".join(f"{name}: {n}" for name, n in sorted(counts.items())) or "no jobs")


@cli.command()
@click.argument("job_id", type=int)
@app_option()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(job_id: int, app: str | None, db: str | None, as_json: bool) -> None:
    """Answer for one job: did it run, did it succeed, why did it fail, will it retry."""
    engine = open_engine(app, db, existing=True)
    try:
        view = engine.get(job_id)
    except JobchartsError as error:
        raise click.ClickException(str(error)) from error
    answers = view.explain(engine.chart_of(view.chart), engine.now())
    if as_json:
        click.echo(json.dumps(_view_json(view, answers), indent=2, default=str))
        return
    click.echo(f"job {view.id} ({view.kind}, chart {view.chart}): {view.state}")
    for question, answer in answers.items():
        click.echo(f"  {question + '?':<17} {answer}")
    click.echo(f"  correlation id    {view.correlation_id}")
    if view.idempotency_key:
        click.echo(f"  idempotency key   {view.idempotency_key}")
    if view.deadline:
        click.echo(f"  deadline          {_when(view.deadline)} (of state {view.state!r})")
    if view.cancel_requested_at:
        click.echo(f"  cancel requested  {_when(view.cancel_requested_at)}")
    click.echo("history:")
    click.echo(
        table(
            ["at", "trigger", "from", "to", "attempt", "detail"],
            [
                [
                    _when(e.at),
                    e.trigger,
                    e.from_state or "-",
                    e.to_state,
                    e.attempt,
                    _detail(e.detail),
                ]
                for e in view.history
            ],
        )
    )
    if view.last_error and view.last_error.traceback:
        click.echo("last traceback:")
        click.echo(view.last_error.traceback.rstrip())


@cli.command()
@click.argument("job_id", type=int)
@app_option()
@db_option
def requeue(job_id: int, app: str | None, db: str | None) -> None:
    """Give a quarantined (or cancelled) job a fresh run: back to pending, attempts reset."""
    engine = open_engine(app, db, existing=True)
    try:
        engine.requeue(job_id)
    except JobchartsError as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"job {job_id} requeued")


@cli.command()
@click.argument("job_id", type=int)
@app_option()
@db_option
def cancel(job_id: int, app: str | None, db: str | None) -> None:
    """Cancel an unfinished job; a running handler is asked to stop at its next step."""
    engine = open_engine(app, db, existing=True)
    try:
        result = engine.cancel(job_id)
    except JobchartsError as error:
        raise click.ClickException(str(error)) from error
    if result == "requested":
        click.echo(
            f"job {job_id}: cancel requested; its running handler stops at its next step "
            "(ctx.cancelled), then the job is cancelled"
        )
    elif result == "cancelled":
        click.echo(f"job {job_id} cancelled")
    else:
        click.echo(f"job {job_id}: its chart's cancel took it to {result!r} (compensation)")


@cli.command()
@db_option
@click.option("--verbose", "-v", is_flag=True, help="Show every attempt's log events.")
def demo(db: str | None, verbose: bool) -> None:
    """A self-contained run on the embedded default: success, recovery, permanent, exhausted."""
    from engine import demo as demo_app

    if not verbose:
        configure_logging("error")
    engine = demo_app.build(db)
    click.echo(f"jobcharts demo on {engine.url}")
    started = time.monotonic()
    ids = demo_app.enqueue_batch(engine)
    totals = engine.drain(timeout=60.0)
    elapsed = time.monotonic() - started
    unique = list(dict.fromkeys(ids))
    views = [engine.get(i) for i in unique]
    click.echo(
        table(
            ["id", "kind", "state", "attempts", "why / result"],
            [[v.id, v.kind, v.state, f"{v.attempt}/{v.max_attempts}", _outcome(v)] for v in views],
        )
    )
    click.echo(
        f"{len(ids)} enqueues -> {len(unique)} jobs ({len(ids) - len(unique)} deduplicated); "
        f"{totals.claimed} attempts: {totals.succeeded} succeeded, {totals.retried} retried, "
        f"{totals.quarantined} quarantined, {totals.ended} compensated (a flow's own end), "
        f"in {elapsed:.2f}s"
    )
    worst = next((v for v in views if v.quarantine_reason == "exhausted"), None)
    if worst is not None:
        click.echo(f"\njobcharts inspect {worst.id}:")
        for question, answer in worst.explain(engine.chart_of(worst.chart), engine.now()).items():
            click.echo(f"  {question + '?':<17} {answer}")


@cli.command()
@db_option
@click.option("--jobs", "n_jobs", default=20_000, show_default=True, help="Jobs per run.")
@click.option("--batch", default=500, show_default=True, help="Jobs claimed per tick.")
@click.option("--repeat", default=3, show_default=True, help="Runs; the median is reported.")
@click.option(
    "--claim-rows",
    default=None,
    help="Instead: time one claim of 100 due jobs in tables of these sizes, e.g. 1000,1000000 "
    "(each in a fresh database: a SQLite file, or a new schema of the --db PostgreSQL).",
)
def bench(db: str | None, n_jobs: int, batch: int, repeat: int, claim_rows: str | None) -> None:
    """Measure enqueue and drain throughput (logs off; fresh SQLite file per run by default)."""
    from engine.harness import bench as bench_mod

    configure_logging("error")
    if claim_rows:
        for rows in (int(r) for r in claim_rows.split(",")):
            ms = bench_mod.claim_cost_fresh(rows, db)
            click.echo(f"claim 100 of {rows:>9,} rows: median {ms:.2f} ms")
        return
    runs = bench_mod.run(n_jobs, batch, repeat, db)
    click.echo(bench_mod.summary(runs, batch, db))


@cli.command()
@click.argument("name", required=False)
@app_option()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["dot", "svg", "png", "mermaid", "md"]),
    default="dot",
    show_default=True,
)
@click.option("--out", type=click.Path(dir_okay=False), help="Write here instead of stdout.")
@click.option(
    "--live",
    is_flag=True,
    help="Overlay live figures from --db: jobs per state, transitions per edge in --window.",
)
@db_option
@click.option("--window", default="1h", show_default=True, help="--live: count transitions since.")
def render(
    name: str | None,
    app: str | None,
    fmt: str,
    out: str | None,
    live: bool,
    db: str | None,
    window: str,
) -> None:
    """Draw a chart (by job kind or chart name; default: every chart of the app)."""
    from statecharts import lifecycle
    from statecharts.render import RenderError
    from statecharts.render import render as draw

    engine = load_app(app) if app else None
    charts = _charts(engine, name) if (app or name) else [lifecycle()]
    if not charts:
        raise click.ClickException("the app registers no job kinds")
    if fmt in ("svg", "png") and len(charts) > 1 and not name:
        raise click.UsageError(f"name one chart to draw as {fmt.upper()}")
    overlays: list[Any] = [None] * len(charts)
    if live:
        try:
            seconds = parse_age(window)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--window") from error
        reader = open_engine(app, db, existing=True)
        try:
            overlays = [reader.overlay(chart.name, seconds) for chart in charts]
        finally:
            reader.close()
    try:
        parts = [draw(chart, fmt, overlay) for chart, overlay in zip(charts, overlays, strict=True)]
    except RenderError as error:
        raise click.ClickException(str(error)) from error
    data = b"\n".join(parts)
    if out:
        Path(out).write_bytes(data)
        click.echo(f"wrote {out}", err=True)
    elif fmt in ("svg", "png") and sys.stdout.isatty():
        raise click.UsageError(f"{fmt.upper()} is binary: pass --out FILE")
    else:
        buffer = getattr(sys.stdout, "buffer", None)
        if buffer is None:
            click.echo(data.decode(), nl=False)
        else:
            buffer.write(data)
            buffer.flush()


def _charts(engine: Engine | None, name: str | None) -> list[Chart]:
    """The charts to draw: one named by job kind or chart name, or all the app's."""
    from statecharts import lifecycle

    if engine is None:
        if name in (None, "lifecycle"):
            return [lifecycle()]
        raise click.UsageError(f"unknown chart {name!r} (pass --app to name an app's kinds)")
    if name is None:
        return list(engine.registry.charts)
    spec = engine.registry.find(name)
    if spec is not None:
        return [spec.chart]
    chart = engine.chart_of(name)
    if chart is None:
        known = sorted({*engine.registry.kinds, *(c.name for c in engine.registry.charts)})
        raise click.UsageError(f"no job kind or chart named {name!r}; known: {', '.join(known)}")
    return [chart]


@cli.command("gen-tests")
@app_option(required=True)
@click.option(
    "--out", required=True, type=click.Path(file_okay=False), help="Directory for the files."
)
@click.argument("names", nargs=-1)
def gen_tests(app: str, out: str, names: tuple[str, ...]) -> None:
    """Write pytest files that drive the real engine along every transition of each chart
    (NAMES: job kinds or chart names; default: every chart of the app)."""
    from engine.gentests import generate

    engine = load_app(app)
    charts: list[Chart] = []
    for name in names or (None,):
        for chart in _charts(engine, name):
            if chart.name not in {c.name for c in charts}:
                charts.append(chart)
    if not charts:
        raise click.ClickException("the app registers no job kinds")
    for path in generate(app, charts, Path(out)):
        click.echo(f"wrote {path}")
    from engine.gentests import unreachable

    for chart in charts:
        for trigger, source, dest in sorted(unreachable(chart)):
            click.echo(
                f"warning: chart {chart.name!r}: no generated path takes {source} --{trigger}--> "
                f"{dest} (its guards need facts the generator holds fixed); test it by hand",
                err=True,
            )


@cli.command()
@app_option(required=True)
def describe(app: str) -> None:
    """Per job kind: trigger, idempotency, retries, timeout, chart and its checks."""
    from statecharts.checks import check_chart

    engine = load_app(app)
    rows = []
    for spec in engine.registry.specs:
        idempotency = (
            f"invariant: {spec.idempotency.reason}"
            if isinstance(spec.idempotency, Invariant)
            else f"keyed (TTL {_span(spec.key_ttl.total_seconds())})"
        )
        retries = "; ".join(
            (f"{state}: " if spec.is_flow else "") + _retries(step.retry)
            for state, step in spec.steps.items()
        )
        findings = check_chart(spec.chart)
        failed = [f.check for f in findings if not f.passes]
        waived = [f.check for f in findings if not f.ok and f.waived]
        checks = "FAIL: " + ", ".join(failed) if failed else "ok"
        if waived:
            checks += f" ({', '.join(waived)} waived)"
        rows.append(
            [
                spec.kind,
                " + ".join(
                    "poller" if s.trigger.key_prefix == "every" else s.trigger.key_prefix
                    for s in engine.schedules.of_kind(spec.kind)
                )
                or "event",
                idempotency,
                retries,
                f"{spec.timeout:g}s",
                spec.chart.name,
                checks,
            ]
        )
    if not rows:
        raise click.ClickException("the app registers no job kinds")
    click.echo(
        table(["kind", "trigger", "idempotency", "retries", "timeout", "chart", "checks"], rows)
    )


@cli.command()
@app_option(required=True)
@db_option
def schedules(app: str, db: str | None) -> None:
    """Per cron schedule and poller: kind, spec, policies, last slot and job, next fire time."""
    from engine.store.schedules import ScheduleStore

    engine = open_engine(app, db)
    if not engine.schedules:
        raise click.ClickException("the app registers no cron schedules or pollers")
    path = sqlite_path(engine.url)
    stored = {} if path and not os.path.exists(path) else ScheduleStore(engine.store).listing()
    now = engine.now()
    rows = []
    for schedule in engine.schedules:
        row = stored.get(schedule.name)
        last = row.last_slot if row is not None else None
        job = "-"
        if row is not None and row.last_job_id is not None:
            job = f"{row.last_job_id} ({row.last_job_state or 'pruned'})"
        upcoming = schedule.trigger.next_after(last or now)
        rows.append(
            [
                schedule.name,
                schedule.kind,
                schedule.spec,
                schedule.policy.describe(),
                _when(last) if last else "never",
                job,
                _when(upcoming) if upcoming else "none",
            ]
        )
    click.echo(
        table(["name", "kind", "spec", "policies", "last slot", "last job", "next fire"], rows)
    )


@cli.command()
@app_option()
def check(app: str | None) -> None:
    """Run the static checks on every chart of the app (exit 1 when one fails)."""
    from statecharts import lifecycle
    from statecharts.checks import check_chart

    charts = list(load_app(app).registry.charts) if app else [lifecycle()]
    failed = 0
    for chart in charts:
        click.echo(f"chart {chart.name}:")
        for finding in check_chart(chart):
            if finding.ok:
                click.echo(f"  ok      {finding.check}")
            elif finding.waived:
                click.echo(f"  waived  {finding.check}: {finding.message}")
                click.echo(f"          reason: {finding.waived}")
            else:
                failed += 1
                click.echo(f"  FAIL    {finding.check}: {finding.message}")
    if failed:
        raise click.ClickException(f"{failed} check(s) failed")


@cli.command()
@db_option
@click.option("--to", "target", default="head", show_default=True, help="Target revision.")
def migrate(db: str | None, target: str) -> None:
    """Bring the database schema to this jobcharts' revision (Alembic; SQLite and PostgreSQL)."""
    from engine.store import Store, resolve_url
    from engine.store import migrate as migrations

    store = Store(resolve_url(db), create=False)
    try:
        before, after = store.migrate(target)
    finally:
        store.close()
    if before == after:
        click.echo(f"schema already at {after} (head {migrations.head()})")
    else:
        click.echo(f"schema migrated from {before or '(empty)'} to {after}")


@cli.command()
@app_option()
@db_option
@click.option(
    "--older-than",
    required=True,
    help="Age of finished jobs to delete: seconds, or a number with s, m, h or d (e.g. 7d).",
)
@click.option("--include-quarantined", is_flag=True, help="Delete old quarantined jobs too.")
def prune(app: str | None, db: str | None, older_than: str, include_quarantined: bool) -> None:
    """Delete finished jobs (events, steps) older than an age; dedupe keys live to their TTL."""
    engine = open_engine(app, db, existing=True)
    try:
        age = parse_age(older_than)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--older-than") from error
    jobs_deleted, keys_deleted = engine.prune(age, include_quarantined=include_quarantined)
    click.echo(f"pruned {jobs_deleted} jobs and {keys_deleted} expired dedupe keys")


def _retries(policy: RetryPolicy) -> str:
    if policy.max_attempts == 1:
        return "none"
    return (
        f"bounded: {policy.max_attempts} attempts, backoff {policy.base:g}s "
        f"x{policy.factor:g} up to {policy.cap:g}s"
    )


def _span(seconds: float) -> str:
    """``604800`` -> ``7d``: the largest unit that divides it (the inverse of parse_age)."""
    return seconds_text(timedelta(seconds=seconds))


def parse_age(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"15m"``, ``"12h"`` or ``"7d"``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    factor = units.get(text[-1:])
    number = text[:-1] if factor else text
    try:
        value = float(number) * (factor or 1)
    except ValueError:
        raise ValueError(f"not an age: {text!r} (use e.g. 3600, 90m, 12h or 7d)") from None
    if not math.isfinite(value):
        raise ValueError(f"not an age: {text!r} (use e.g. 3600, 90m, 12h or 7d)")
    if value < 0:
        raise ValueError(f"an age cannot be negative: {text!r}")
    if value > MAX_AGE_SECONDS:
        raise ValueError(f"an age of more than 100 years is not an age: {text!r}")
    return value


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _when(value: datetime | None) -> str:
    return value.isoformat(sep=" ", timespec="milliseconds") if value else "-"


def _detail(detail: dict[str, Any] | None) -> str:
    if not detail:
        return ""
    return ", ".join(f"{k}={v}" for k, v in detail.items())


def _outcome(view: JobView) -> str:
    if view.quarantine_reason:
        error = view.last_error
        return (
            f"{view.quarantine_reason}: {error.error_class}: {error.message}"
            if error
            else view.quarantine_reason
        )
    if view.state == "succeeded":
        return "" if view.result is None else f"result {json.dumps(view.result)}"
    return view.last_error.message if view.last_error else ""


def _view_json(view: JobView, answers: dict[str, str]) -> dict[str, Any]:
    return {
        "id": view.id,
        "kind": view.kind,
        "state": view.state,
        "attempt": view.attempt,
        "max_attempts": view.max_attempts,
        "due_at": view.due_at,
        "deadline": view.deadline,
        "cancel_requested_at": view.cancel_requested_at,
        "queue": view.queue,
        "priority": view.priority,
        "quarantine_reason": view.quarantine_reason,
        "last_error": vars(view.last_error) if view.last_error else None,
        "answers": answers,
        "history": [vars(e) for e in view.history],
    }


def main() -> None:
    try:
        cli(prog_name="jobcharts")
    except JobchartsError as error:  # a refused schema, say: a message, not a traceback
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
