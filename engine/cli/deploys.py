"""Commands for deploys: ``check --db`` findings and ``migrate-jobs`` (jobs of older chart
versions moved as the charts declare, dry run first)."""

from __future__ import annotations

from collections import Counter

import click

from engine.cli.common import app_option, cli, db_option, open_engine, table
from engine.deploys import Finding, check_deploy
from engine.engine import Engine
from engine.kinds import KindConflict
from engine.services.strays import Sweep
from engine.store import redact

MARKS = {"breaking": "BREAKING", "migrates": "migrates", "changed": "changed", "note": "note"}


def deploy_findings(engine: Engine) -> list[Finding]:
    """Print what the app's charts do to the jobs in flight; return the findings."""
    findings = check_deploy(engine.registry, engine.store)  # (writes nothing)
    try:
        for change in engine.own_kinds(record=False):
            findings.append(
                Finding(
                    "note",
                    change.kind,
                    "-",
                    0,
                    f"payload schema of {change.kind!r} "
                    f"changes {change.before.schema_hash} -> {change.after.schema_hash}: "
                    f"{change.why}",
                )
            )
    except KindConflict as error:
        findings.append(Finding("breaking", "kinds", "-", 0, str(error)))
    click.echo(f"jobs in flight on {redact(engine.url)}:")
    if not findings:
        click.echo("  ok      no job in flight is affected by these chart versions")
    for finding in findings:
        click.echo(f"  {MARKS[finding.severity]:<9} {finding.chart}: {finding.message}")
    return findings


def sweep_table(sweep: Sweep) -> str:
    """The strays grouped: kind, state, recorded version, what happens, how many."""
    groups = Counter(
        (row.kind, row.state, row.chart_version or "(unrecorded)", v.action, v.dest or "-")
        for row, v in sweep.verdicts
    )
    return table(
        ["kind", "state", "version", "action", "to", "jobs"],
        [[*key, n] for key, n in sorted(groups.items())],
    )


@cli.command("migrate-jobs")
@app_option(required=True)
@db_option
@click.option("--yes", is_flag=True, help="Apply the migrations (default: a dry run).")
def migrate_jobs(app: str, db: str | None, yes: bool) -> None:
    """Move the jobs of older chart versions as the charts' migrations declare, quarantine
    rows no chart can take, and list the jobs left stranded. A dry run unless --yes.

    Workers do the same on their own (at start, then every minute, and as jobs fall due);
    this does it now, and shows it first.
    """
    engine = open_engine(app, db, existing=True)
    sweep = engine.sweep_strays(apply=False)
    if not sweep.verdicts:
        click.echo("nothing to migrate: every unfinished job is in a state its chart has")
        return
    click.echo(sweep_table(sweep))
    if not yes:
        click.echo("dry run: nothing changed; run again with --yes to apply")
        return
    applied = engine.sweep_strays()
    moved = Counter(move.event.trigger for _, move in applied.applied)
    left = sum(applied.stranded.values())
    click.echo(
        f"migrated {moved.get('migrate', 0)}, set aside {moved.get('set_aside', 0)}, "
        f"left stranded {left}"
    )
    if left:
        raise click.ClickException(
            f"{left} job(s) stay stranded: declare migrations for their states (see above)"
        )
