"""Commands on the database: ``migrate``, ``prune``."""

from __future__ import annotations

import click

from engine.cli.common import (
    app_option,
    cli,
    db_option,
    open_engine,
    parse_age,
)


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
