"""The ``jobcharts`` command line: run workers, enqueue, list, inspect and requeue jobs,
draw and check charts. One module per group of commands; ``common`` holds the group."""

from __future__ import annotations

import sys

import click

from engine.cli import charts, database, deploys, jobs, run
from engine.cli.common import cli, load_app, open_engine, parse_age
from engine.errors import JobchartsError

__all__ = [
    "charts",
    "cli",
    "database",
    "deploys",
    "jobs",
    "load_app",
    "main",
    "open_engine",
    "parse_age",
    "run",
]


def main() -> None:
    try:
        cli(prog_name="jobcharts")
    except JobchartsError as error:  # a refused schema, say: a message, not a traceback
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
