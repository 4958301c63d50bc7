"""Commands on jobs: ``enqueue``, ``jobs``, ``inspect``, ``requeue``, ``cancel``."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from pydantic import ValidationError

from engine import bulk
from engine.bulk import JobFilter
from engine.cli.common import (
    app_option,
    cli,
    db_option,
    detail_text,
    open_engine,
    parse_age,
    table,
    view_json,
    when_text,
)
from engine.engine import Engine
from engine.errors import JobchartsError
from engine.operators import CANCELLED, REQUESTED
from engine.outcomes import QuarantineReason
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


def filter_options(fn: Any) -> Any:
    """--state, --kind, --queue, --reason: each repeatable (a job matches one of them)."""
    reasons = click.Choice([str(r) for r in QuarantineReason])
    options = [
        click.option(
            "--state",
            "states",
            multiple=True,
            help="Only jobs in this state (repeatable); checked against the app's charts' "
            "states (the built-in lifecycle's without --app) and those jobs are in.",
        ),
        click.option("--kind", "kinds", multiple=True, help="Only jobs of this kind (repeatable)."),
        click.option(
            "--queue", "queues", multiple=True, help="Only jobs in this queue (repeatable)."
        ),
        click.option(
            "--reason",
            "reasons",
            type=reasons,
            multiple=True,
            help="Only jobs quarantined for this reason (repeatable).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def checked_states(engine: Engine, states: tuple[str, ...]) -> tuple[str, ...]:
    """``states``, or a usage error naming the known states."""
    try:
        bulk.check_states(engine, states)
    except bulk.UnknownState as error:
        raise click.BadParameter(str(error), param_hint="--state") from error
    return states


def parse_when(text: str, now: datetime, option: str) -> datetime:
    """A time given as ISO 8601 (UTC unless it says otherwise) or as an age before now
    (``90m``, ``12h``, ``7d``)."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        try:
            return now - timedelta(seconds=parse_age(text))
        except ValueError as error:
            raise click.BadParameter(
                f"{text!r} is neither a time (2024-05-01T12:00, UTC unless it says) nor an "
                f"age (90m, 12h, 7d): {error}",
                param_hint=option,
            ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def age_option(name: str, help: str) -> Any:
    return click.option(name, default=None, metavar="AGE", help=help)


def ago(text: str | None, now: datetime, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return now - timedelta(seconds=parse_age(text))
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint=option) from None


@cli.command()
@app_option()
@db_option
@filter_options
@age_option(
    "--older-than", "Only jobs that last changed (updated_at) more than AGE ago (90m, 12h, 7d)."
)
@age_option("--newer-than", "Only jobs that last changed (updated_at) less than AGE ago.")
@click.option(
    "--after",
    type=click.IntRange(min=1),
    default=None,
    metavar="ID",
    help="The next page: jobs older than job ID (the cursor the previous page printed).",
)
@click.option(
    "--limit",
    type=click.IntRange(1, bulk.MAX_PAGE),
    default=50,
    show_default=True,
    help=f"Jobs per page (1 to {bulk.MAX_PAGE}).",
)
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON document: the jobs and the next cursor."
)
@click.option(
    "--stranded",
    is_flag=True,
    help="Only jobs the app's charts cannot take as they are (a state a deploy removed, a "
    "corrupt row), with what a worker will do about each; needs --app.",
)
def jobs(
    app: str | None,
    db: str | None,
    states: tuple[str, ...],
    kinds: tuple[str, ...],
    queues: tuple[str, ...],
    reasons: tuple[str, ...],
    older_than: str | None,
    newer_than: str | None,
    after: int | None,
    limit: int,
    as_json: bool,
    stranded: bool,
) -> None:
    """List jobs, newest first, a page at a time, with a count per state.

    A full page ends with the cursor of the next one (``next page: --after ID``; in
    ``--json``, ``next_after``, null on the last page).
    """
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
    now = engine.now()
    selection = JobFilter(
        states=checked_states(engine, states),
        kinds=kinds,
        queues=queues,
        reasons=reasons,
        updated_since=ago(newer_than, now, "--newer-than"),
        updated_before=ago(older_than, now, "--older-than"),
    )
    page = bulk.page(engine, selection, after=after, limit=limit)
    counts = engine.store.job_count_by_state()
    if as_json:
        document = {
            "jobs": [bulk.row_json(r) for r in page.rows],
            "next_after": page.next_after,
            "counts": counts,
        }
        click.echo(json.dumps(document, indent=2))
        return
    click.echo(
        table(
            ["id", "kind", "state", "queue", "attempt", "updated_at", "reason / last error"],
            [
                [
                    r.id,
                    r.kind,
                    r.state,
                    r.queue,
                    f"{r.attempt}/{r.max_attempts}",
                    when_text(r.updated_at),
                    r.quarantine_reason or ("" if r.finished_at else r.last_error_class or ""),
                ]
                for r in page.rows
            ],
        )
    )
    if page.next_after is not None:
        click.echo(f"next page: --after {page.next_after}")
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
        by = f" by {view.cancel_requested_by}" if view.cancel_requested_by else ""
        click.echo(f"  cancel requested  {when_text(view.cancel_requested_at)}{by}")
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


PAST = {"requeue": "requeued", "cancel": "cancelled"}
PROGRESS_EVERY = 2.0  # seconds between progress lines of a long run


def bulk_command(action: str, summary: str) -> Any:
    """The ``requeue`` and ``cancel`` commands: by ids, or by filter (a dry run unless
    --yes)."""

    def decorate(fn: Any) -> Any:
        for option in reversed(
            [
                click.argument("job_ids", nargs=-1, type=int, metavar="[ID]..."),
                app_option(),
                db_option,
                filter_options,
                click.option(
                    "--since",
                    metavar="WHEN",
                    help="Only jobs that last changed (updated_at) at or after WHEN: a time "
                    "(2024-05-01T12:00, UTC unless it says) or an age (90m, 12h, 7d ago).",
                ),
                click.option(
                    "--before",
                    metavar="WHEN",
                    help="Only jobs that last changed (updated_at) before WHEN (as --since).",
                ),
                click.option(
                    "--dry-run",
                    is_flag=True,
                    help=f"Only show what would be {PAST[action]} (the default with a filter).",
                ),
                click.option(
                    "--yes", is_flag=True, help=f"With a filter: {action} them (not a dry run)."
                ),
                click.option(
                    "--batch-size",
                    type=click.IntRange(1, 10_000),
                    default=bulk.DEFAULT_BATCH,
                    show_default=True,
                    help="Jobs per transaction.",
                ),
                click.option(
                    "--show",
                    type=click.IntRange(0, 1000),
                    default=20,
                    show_default=True,
                    help="Jobs a dry run lists (and skipped jobs a run lists).",
                ),
            ]
        ):
            fn = option(fn)
        fn.__doc__ = f"""{summary}

        Name jobs by ID (done at once; --dry-run to look first), or select them with
        filters (--state, --kind, --queue, --reason, --since, --before; they combine):
        a filter shows what it would do (how many jobs, the first --show of them) and
        changes nothing until run again with --yes. Jobs are taken in id order,
        --batch-size per transaction; jobs enqueued meanwhile are left alone. A job that
        cannot be {PAST[action]} is skipped with the reason; it does not stop the run.

        Exit status: 0 done (skips listed); 1 nothing matched, or a job named by ID
        is missing or was skipped; 2 a wrong command line."""
        return cli.command(name=action)(fn)

    return decorate


def run_bulk(
    action: str,
    job_ids: tuple[int, ...],
    app: str | None,
    db: str | None,
    states: tuple[str, ...],
    kinds: tuple[str, ...],
    queues: tuple[str, ...],
    reasons: tuple[str, ...],
    since: str | None,
    before: str | None,
    dry_run: bool,
    yes: bool,
    batch_size: int,
    show: int,
) -> None:
    filtered = bool(states or kinds or queues or reasons or since or before)
    if job_ids and filtered:
        raise click.UsageError(f"{action}: name job IDs or give filters, not both")
    if not job_ids and not filtered:
        raise click.UsageError(
            f"{action}: name job IDs, or select jobs with --state, --kind, --queue, --reason, "
            "--since or --before"
        )
    if dry_run and yes:
        raise click.UsageError("--dry-run and --yes contradict each other")
    engine = open_engine(app, db, existing=True)
    now = engine.now()
    selection = JobFilter(
        ids=job_ids,
        states=checked_states(engine, states),
        kinds=kinds,
        queues=queues,
        reasons=reasons,
        updated_since=parse_when(since, now, "--since") if since else None,
        updated_before=parse_when(before, now, "--before") if before else None,
    )
    if dry_run or (filtered and not yes):
        show_plan(engine, action, selection, show)
        return
    report = apply_with_progress(engine, action, selection, batch_size, show)
    if job_ids:
        report_named(action, job_ids, report)
    else:
        report_filtered(action, report)


def show_plan(engine: Engine, action: str, selection: JobFilter, show: int) -> None:
    """A dry run: how many jobs, per state, and the verdict on the first ``show``. Jobs
    named by id are all judged (exit 1 if one is missing or would be skipped)."""
    named = len(set(selection.ids))
    try:
        plan = bulk.plan(engine, action, selection, sample=max(show, named))
    except JobchartsError as error:
        raise click.ClickException(str(error)) from error
    refusals = [v for v in plan.sample if v.dest is None]
    plan = replace(plan, sample=plan.sample[:show])
    for job_id in plan.missing:
        click.echo(f"no job with id {job_id}", err=True)
    if not plan.matched:
        raise click.ClickException(f"no job matches {selection.describe()}: nothing to {action}")
    states = ", ".join(f"{s} {n}" for s, n in sorted(plan.by_state.items()))
    click.echo(f"would {action} {plan.matched} job(s) matching {selection.describe()} ({states})")
    if plan.sample:
        click.echo(
            table(
                ["id", "kind", "state", "updated_at", "reason / last error", "would"],
                [
                    [
                        v.row.id,
                        v.row.kind,
                        v.row.state,
                        when_text(v.row.updated_at),
                        v.row.quarantine_reason or v.row.last_error_class or "",
                        verdict_text(v),
                    ]
                    for v in plan.sample
                ],
            )
        )
        if not plan.shown_all:
            click.echo(f"(the first {len(plan.sample)} of {plan.matched} shown, in id order)")
    if not selection.ids:
        click.echo(f"dry run: nothing changed; run again with --yes to {action} them")
        return
    click.echo(f"dry run: nothing changed; run again without --dry-run to {action} them")
    if plan.missing or refusals:
        raise click.ClickException(
            f"{len(plan.missing) + len(refusals)} of {named} job(s) would not be {PAST[action]}"
        )


def verdict_text(v: bulk.Verdict) -> str:
    if v.dest is None:
        return f"skip: {v.why}"
    if v.dest == REQUESTED:
        return "ask its running handler to stop"
    return f"-> {v.dest}"


def apply_with_progress(
    engine: Engine, action: str, selection: JobFilter, batch_size: int, show: int
) -> bulk.Report:
    last = [time.monotonic()]

    def progress(report: bulk.Report) -> None:
        if time.monotonic() - last[0] >= PROGRESS_EVERY:
            last[0] = time.monotonic()
            click.echo(
                f"... {report.matched} job(s) looked at, {report.changed} "
                f"{PAST[action]}, {report.skipped} skipped",
                err=True,
            )

    try:
        return bulk.apply(
            engine, action, selection, batch_size=batch_size, keep=max(show, 1), on_batch=progress
        )
    except JobchartsError as error:
        raise click.ClickException(str(error)) from error


def done_text(action: str, job_id: int, dest: str) -> str:
    if dest == REQUESTED:
        return (
            f"job {job_id}: cancel requested; its running handler stops at its next step "
            "(ctx.cancelled), then the job is cancelled"
        )
    if action == "cancel" and dest != CANCELLED:
        return f"job {job_id}: its chart's cancel took it to {dest!r} (compensation)"
    return f"job {job_id} {PAST[action]}"


def report_named(action: str, job_ids: tuple[int, ...], report: bulk.Report) -> None:
    """Jobs named by id: a line per job; exit 1 if any could not take the action."""
    for job_id, dest in report.done:
        click.echo(done_text(action, job_id, dest))
    named = len(set(job_ids))
    if named == 1 and report.skips:
        skip = report.skips[0]
        message = f"cannot {action} job {skip.job_id}: {skip.why}"
        raise click.ClickException(skip.why if skip.state is None else message)
    for skip in report.skips:
        click.echo(f"job {skip.job_id} not {PAST[action]}: {skip.why}", err=True)
    if named > 1:
        click.echo(summary_text(action, report))
    if report.skipped:
        raise click.ClickException(f"{report.skipped} of {named} job(s) not {PAST[action]}")


def report_filtered(action: str, report: bulk.Report) -> None:
    """Jobs a filter selected: the totals and the skipped jobs; exit 1 if none matched."""
    if not report.matched:
        raise click.ClickException(
            f"no job matches {report.filter.describe()}: nothing to {action}"
        )
    click.echo(summary_text(action, report))
    if report.skipped:
        click.echo(
            table(["skipped", "reason"], sorted(report.skip_codes.items(), key=lambda i: -i[1]))
        )
        click.echo(
            table(
                ["id", "state", "why"],
                [[s.job_id, s.state or "-", s.why] for s in report.skips],
            )
        )
        if len(report.skips) < report.skipped:
            click.echo(f"(the first {len(report.skips)} of {report.skipped} skipped jobs shown)")


def summary_text(action: str, report: bulk.Report) -> str:
    parts = [f"{PAST[action]} {sum(report.moved.values())} job(s)"]
    if action == "cancel":
        elsewhere = {d: n for d, n in report.moved.items() if d != CANCELLED}
        parts = [f"cancelled {report.moved.get(CANCELLED, 0)} job(s)"]
        parts += [f"{n} took their chart's cancel to {d!r}" for d, n in sorted(elsewhere.items())]
        if report.requested:
            parts.append(
                f"asked the running handlers of {report.requested} job(s) to stop (each is "
                "cancelled at its next step)"
            )
    parts.append(f"skipped {report.skipped}")
    return (
        f"{'; '.join(parts)} (run {report.run}: {report.matched} job(s) matched, "
        f"{report.batches} batch(es))"
    )


@bulk_command(
    "requeue",
    "Give quarantined (or cancelled) jobs a fresh run: back to pending, attempts reset.",
)
def requeue(**options: Any) -> None:
    run_bulk("requeue", **options)


@bulk_command(
    "cancel",
    "Cancel unfinished jobs; a running handler is asked to stop at its next step.",
)
def cancel(**options: Any) -> None:
    run_bulk("cancel", **options)
