"""``jobcharts stats``: counts per kind and state, and throughput, failure rate and lag
over a recent window, the oldest due job and the quarantine reasons (``engine.stats``)."""

from __future__ import annotations

import json
from datetime import timedelta

import click

from engine.cli.common import (
    app_option,
    cli,
    db_option,
    open_engine,
    parse_age,
    span_text,
    table,
    when_text,
)
from engine.stats import Stats, Window, stats


@cli.command("stats")
@app_option()
@db_option
@click.option(
    "--window",
    default="1h",
    show_default=True,
    help="The recent span throughput, failure rate and lag cover: seconds, or a number "
    "with s, m, h or d.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def stats_command(app: str | None, db: str | None, window: str, as_json: bool) -> None:
    """Figures over every job: counts per kind and state; throughput, failure rate and lag
    (due to start, p50/p99) over the window; the oldest due job; quarantine reasons."""
    try:
        seconds = parse_age(window)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--window") from error
    if seconds <= 0:
        raise click.BadParameter("the window must be longer than 0", param_hint="--window")
    engine = open_engine(app, db, existing=True)
    figures = stats(engine, engine.now(), seconds)
    if as_json:
        click.echo(json.dumps(figures.to_json(), indent=2))
        return
    click.echo(stats_text(figures))


def stats_text(figures: Stats) -> str:
    """The figures as tables for a terminal."""
    span = span_text(figures.window)
    lines = [f"jobs at {when_text(figures.now)}"]
    if figures.counts:
        lines.append(
            table(
                ["kind", "state", "final", "jobs"],
                [[c.kind, c.state, "yes" if c.final else "no", c.jobs] for c in figures.counts],
            )
        )
    lines.append(f"unfinished {figures.unfinished}, finished {figures.finished}")
    since = when_text(figures.now - timedelta(seconds=figures.window))
    windows = [*((w.kind or "", w) for w in figures.kinds), ("(all)", figures.total)]
    lines += ["", f"finished in the last {span} (since {since})"]
    lines.append(
        table(
            ["kind", "finished", "per s", "as"],
            [[name, w.finished, f"{w.per_second:.3g}", _states(w)] for name, w in windows],
        )
    )
    lines += ["", f"attempts ended in the last {span}"]
    lines.append(
        table(
            ["kind", "attempts", "failed", "failure rate", "lag p50", "lag p99"],
            [[name, w.attempts, w.failed, *_attempt_figures(w)] for name, w in windows],
        )
    )
    starts = figures.total.lag_starts
    which = "the latest" if figures.lag_sample_full else "all"
    lines.append(f"lag: from due to start, over {which} {starts} start(s) of the window")
    lines.append("")
    due = figures.oldest_due
    if due is None:
        lines.append("oldest due job: none")
    else:
        lines.append(
            f"oldest due job: {due.id} ({due.kind}, {due.state}), due {when_text(due.due_at)}, "
            f"{duration_text(due.age)} ago"
        )
    lines += ["", "quarantine reasons"]
    if figures.quarantine_reasons:
        lines.append(
            table(
                ["kind", "reason", "jobs"],
                [[r.kind, r.reason or "-", r.jobs] for r in figures.quarantine_reasons],
            )
        )
    else:
        lines.append("none")
    return "\n".join(lines)


def _states(w: Window) -> str:
    return ", ".join(f"{state} {n}" for state, n in sorted(w.finished_by_state.items()))


def _attempt_figures(w: Window) -> list[str]:
    rate = "-" if w.failure_rate is None else f"{w.failure_rate * 100:.1f}%"
    return [rate, duration_text(w.lag_p50), duration_text(w.lag_p99)]


def duration_text(value: float | None) -> str:
    """``0.5`` -> ``0.500s``; from a minute on, the two largest units: ``2m 5s``, ``3d 4h``."""
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.3f}s"
    left = round(value)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if parts or left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return " ".join(parts[:2])
