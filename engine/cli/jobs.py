"""Commands on jobs: ``enqueue``, ``jobs``, ``inspect``, ``requeue``, ``cancel``."""

from __future__ import annotations

import json
import sys

import click
from pydantic import ValidationError

from engine.cli.common import (
    app_option,
    cli,
    db_option,
    detail_text,
    open_engine,
    table,
    view_json,
    when_text,
)
from engine.errors import JobchartsError
from engine.view import stray_note, waiting_reason


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
    """Enqueue a job of KIND with a JSON PAYLOAD ("-" reads it from standard input);
    prints its id (the first id if deduplicated)."""
    engine = open_engine(app, db)
    if payload == "-":
        payload = sys.stdin.read()
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
@click.option(
    "--stranded",
    is_flag=True,
    help="Only jobs the app's charts cannot take as they are (a state a deploy removed, a "
    "corrupt row), with what a worker will do about each; needs --app.",
)
def jobs(
    app: str | None,
    db: str | None,
    state: str | None,
    kind: str | None,
    limit: int,
    stranded: bool,
) -> None:
    """List jobs, newest first, with a count per state."""
    engine = open_engine(app, db, existing=True)
    if stranded:
        if not app:
            raise click.UsageError("jobs --stranded needs --app: the charts judge the rows")
        sweep = engine.sweep_strays(apply=False)
        rows_ = [
            [r.id, r.kind, r.state, r.chart_version or "(unrecorded)", v.action, v.why]
            for r, v in sweep.verdicts[:limit]
        ]
        click.echo(table(["id", "kind", "state", "version", "action", "why"], rows_))
        click.echo(f"{len(sweep.verdicts)} job(s) the charts cannot take as they are")
        return
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
                    when_text(r.due_at),
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
    answers = view.explain(
        engine.chart_of(view.chart),
        engine.now(),
        waiting=waiting_reason(engine, view),
        stray=stray_note(engine, job_id),
    )
    if as_json:
        click.echo(json.dumps(view_json(view, answers), indent=2, default=str))
        return
    click.echo(f"job {view.id} ({view.kind}, chart {view.chart}): {view.state}")
    for question, answer in answers.items():
        click.echo(f"  {question + '?':<17} {answer}")
    click.echo(f"  correlation id    {view.correlation_id}")
    if view.chart_version:
        click.echo(f"  chart version     {view.chart_version}")
    if view.idempotency_key:
        click.echo(f"  idempotency key   {view.idempotency_key}")
    if view.deadline:
        click.echo(f"  deadline          {when_text(view.deadline)} (of state {view.state!r})")
    if view.cancel_requested_at:
        click.echo(f"  cancel requested  {when_text(view.cancel_requested_at)}")
    click.echo("history:")
    click.echo(
        table(
            ["at", "trigger", "from", "to", "attempt", "detail"],
            [
                [
                    when_text(e.at),
                    e.trigger,
                    e.from_state or "-",
                    e.to_state,
                    e.attempt,
                    detail_text(e.detail),
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
