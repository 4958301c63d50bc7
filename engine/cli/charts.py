"""Commands on charts and schedules: render, check, describe, gen-tests, schedules."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click

from engine.cli.common import (
    app_option,
    cli,
    db_option,
    load_app,
    open_engine,
    parse_age,
    retries_text,
    span_text,
    table,
    when_text,
)
from engine.engine import Engine
from engine.registry import Invariant
from engine.store import sqlite_path
from statecharts import Chart


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
@click.option(
    "--job",
    "job_id",
    type=int,
    default=None,
    help="Draw the chart version job ID last moved under (recorded in --db), with its path.",
)
@click.option(
    "--view",
    type=click.Choice(["review", "full"]),
    default="review",
    show_default=True,
    help="review: every state and business transition, the engine's plumbing folded into "
    "the states (retries and timeout from --app), one 'on error' arrow per step and a "
    "legend; full: every declared transition. md is the full table in both.",
)
def render(
    name: str | None,
    app: str | None,
    fmt: str,
    out: str | None,
    live: bool,
    db: str | None,
    window: str,
    job_id: int | None,
    view: str,
) -> None:
    """Draw a chart (by job kind or chart name; default: every chart of the app)."""
    from statecharts import lifecycle
    from statecharts.render import RenderError
    from statecharts.render import render as draw

    engine = load_app(app) if app else None
    if job_id is not None:
        if live or name:
            raise click.UsageError("--job draws one job's own chart: no NAME, no --live")
        chart, overlay = _job_chart(open_engine(app, db, existing=True), job_id)
        try:
            _write(draw(chart, fmt, overlay, view=view), fmt, out)
        except RenderError as error:
            raise click.ClickException(str(error)) from error
        return
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
            # NAME a job kind: that kind's jobs only; a chart's name: all its kinds'.
            kind = name if name and reader.registry.find(name) is not None else None
            overlays = [reader.overlay(chart.name, seconds, kind=kind) for chart in charts]
        finally:
            reader.close()
    try:
        parts = [
            draw(chart, fmt, overlay, view=view, badges=_badges(engine, name, chart, view))
            for chart, overlay in zip(charts, overlays, strict=True)
        ]
    except RenderError as error:
        raise click.ClickException(str(error)) from error
    _write(b"\n".join(parts), fmt, out)


def _badges(engine: Engine | None, name: str | None, chart: Chart, view: str) -> Any:
    """What the review view writes in each step: the retry policy and timeout of the kind
    named (or of every kind of the chart, where they agree); none without an app."""
    from engine.badges import badges, chart_badges

    if engine is None or view != "review":
        return None
    spec = engine.registry.find(name) if name else None
    if spec is not None and spec.chart.name == chart.name:
        return badges(spec)
    return chart_badges(engine.registry.specs, chart.name) or None


def _job_chart(reader: Engine, job_id: int) -> tuple[Chart, Any]:
    """The recorded chart version job ``job_id`` last moved under, and its path on it."""
    from engine.errors import JobNotFound
    from engine.view import path_chart

    try:
        row = reader.store.job_get(job_id)
        if row is None:
            raise click.ClickException(f"no job with id {job_id}")
        return path_chart(reader.store, row)
    except JobNotFound as error:
        raise click.ClickException(str(error)) from error
    finally:
        reader.close()


def _write(data: bytes, fmt: str, out: str | None) -> None:
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
    """Per job kind: trigger, idempotency, retries, timeout, global limits, chart, checks."""
    from statecharts.checks import check_chart

    engine = load_app(app)
    rows = []
    for spec in engine.registry.specs:
        idempotency = (
            f"invariant: {spec.idempotency.reason}"
            if isinstance(spec.idempotency, Invariant)
            else f"keyed (TTL {span_text(spec.key_ttl.total_seconds())})"
        )
        retries = "; ".join(
            (f"{state}: " if spec.is_flow else "") + retries_text(step.retry)
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
                "; ".join(
                    f"{scope.by}: {limit}"
                    for scope, limit in engine.registry.limits.of(spec.kind, spec.queue).items()
                )
                or "-",
                spec.chart.name,
                checks,
            ]
        )
    if not rows:
        raise click.ClickException("the app registers no job kinds")
    headers = ["kind", "trigger", "idempotency", "retries", "timeout", "limits", "chart", "checks"]
    click.echo(table(headers, rows))


@cli.command()
@app_option(required=True)
@db_option
def schedules(app: str, db: str | None) -> None:
    """Per cron schedule and poller: kind, spec, policies, last slot and job, next fire time."""
    from engine.view import schedule_rows

    engine = open_engine(app, db)
    if not engine.schedules:
        raise click.ClickException("the app registers no cron schedules or pollers")
    engine.create_schema = False  # a listing creates nothing
    path = sqlite_path(engine.url)
    rows = schedule_rows(engine, stored=not (path and not os.path.exists(path)))
    click.echo(
        table(
            ["name", "kind", "spec", "policies", "last slot", "last job", "next fire"],
            [
                [
                    r.name,
                    r.kind,
                    r.spec,
                    r.policy,
                    when_text(r.last_slot) if r.last_slot else "never",
                    f"{r.last_job_id} ({r.last_job_state or 'pruned'})"
                    if r.last_job_id is not None
                    else "-",
                    when_text(r.next_fire) if r.next_fire else "none",
                ]
                for r in rows
            ],
        )
    )


@cli.command()
@app_option()
@click.option(
    "--db",
    default=None,
    help="Also check the app's charts against the jobs in flight in this database "
    "(a deploy check: exit 1 when jobs would be stranded).",
)
def check(app: str | None, db: str | None) -> None:
    """Run the static checks on every chart of the app (exit 1 when one fails); with
    --db, also what these chart versions do to the jobs in flight."""
    from engine.cli.deploys import deploy_findings
    from statecharts import lifecycle
    from statecharts.checks import check_chart

    if db and not app:
        raise click.UsageError("check --db needs --app: the charts to check come from the app")
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
    if db and app:
        engine = open_engine(app, db, existing=True)
        breaking = [f for f in deploy_findings(engine) if f.severity == "breaking"]
        if breaking:
            stranded = sum(f.jobs for f in breaking)
            raise click.ClickException(
                f"{len(breaking)} breaking change(s) for the jobs in flight (above)"
                + (f": {stranded} job(s) would be stranded" if stranded else "")
            )
    if failed:
        raise click.ClickException(f"{failed} check(s) failed")
