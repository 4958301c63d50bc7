"""The ``jobcharts`` command line: run workers, enqueue, list, inspect and requeue jobs,
draw and check charts. One module per group of commands; ``common`` holds the group."""

from __future__ import annotations

import os
import sys

import click

from engine.cli import charts, dashboard, database, deploys, diff, jobs, run, stats
from engine.cli.common import cli, load_app, open_engine, parse_age
from engine.cli.failures import one_line

__all__ = [
    "charts",
    "cli",
    "dashboard",
    "database",
    "deploys",
    "diff",
    "jobs",
    "load_app",
    "main",
    "open_engine",
    "parse_age",
    "run",
    "stats",
]


def main() -> None:
    """The console script: a failure is one line on stderr and exit status 1 (2 for a
    wrong command line), unless ``--debug`` or ``$JOBCHARTS_DEBUG`` asks for the traceback."""
    debug = "--debug" in sys.argv[1:] or bool(os.environ.get("JOBCHARTS_DEBUG"))
    try:
        cli(prog_name="jobcharts")
    except Exception as error:
        if debug:
            raise
        click.echo(f"Error: {one_line(error, _db_argument(sys.argv[1:]))}", err=True)
        sys.exit(1)


def _db_argument(argv: list[str]) -> str | None:
    """The --db the command was given, to name it in an error."""
    for index, arg in enumerate(argv):
        if arg == "--db" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--db="):
            return arg.partition("=")[2]
    return None
