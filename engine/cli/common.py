"""What every command shares: the ``jobcharts`` group, ``--app``/``--db``, output helpers."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import click

from engine import app
from engine.engine import Engine
from engine.errors import JobchartsError
from engine.logs import configure_logging
from engine.retry import NoRetry, RetryPolicy
from engine.store import sqlite_path
from engine.timetable import parse_age as parse_age  # re-exported for the commands
from engine.timetable import seconds_text
from engine.view import JobView

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
    engine.create_schema = not existing  # (an app's engine may serve several commands)
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
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default="auto",
    show_default=True,
    help="auto: console lines on a terminal, JSON lines otherwise (a log collector).",
)
@click.option("--debug", is_flag=True, help="Show the traceback when a command fails.")
def cli(log_level: str, log_format: str, debug: bool) -> None:
    """jobcharts: every background job a persisted, declared, verified state machine.

    Exit status: 0 done, 1 the command failed or refused, 2 a wrong command line.
    """
    configure_logging(log_level, log_format)


def retries_text(policy: RetryPolicy) -> str:
    if isinstance(policy, NoRetry):
        return f"none ({policy.reason})"
    if policy.max_attempts == 1:
        return "none"
    return (
        f"bounded: {policy.max_attempts} attempts, backoff {policy.base:g}s "
        f"x{policy.factor:g} up to {policy.cap:g}s"
    )


def span_text(seconds: float) -> str:
    """``604800`` -> ``7d``: the largest unit that divides it (the inverse of parse_age)."""
    return seconds_text(timedelta(seconds=seconds))


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def when_text(value: datetime | None) -> str:
    return value.isoformat(sep=" ", timespec="milliseconds") if value else "-"


def detail_text(detail: dict[str, Any] | None) -> str:
    if not detail:
        return ""
    return ", ".join(f"{k}={v}" for k, v in detail.items())


def outcome_text(view: JobView) -> str:
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


def view_json(view: JobView, answers: dict[str, str]) -> dict[str, Any]:
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
