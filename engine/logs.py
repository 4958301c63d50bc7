"""structlog set-up for the CLI (libraries only call ``structlog.get_logger``)."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from engine.events import set_log_threshold


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Render jobcharts events to stderr as console lines or JSON, from ``level`` up
    (``auto``: console lines on a terminal, JSON lines for a log collector)."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    set_log_threshold(numeric)
    renderers: list[structlog.typing.Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if fmt == "json"
        else [structlog.processors.format_exc_info, console_line]
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *renderers,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def console_line(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> str:
    """``<time> [<level>] <event> key=value ...``, keys sorted, a traceback below.

    The shape of structlog's ConsoleRenderer without colours, at a third of its cost: a
    worker writes a line per attempt, and the drain must not pay for padding and styles.
    """
    stamp = event.pop("timestamp", "")
    level = event.pop("level", "")
    name = event.pop("event", "")
    trace = event.pop("exception", None)
    fields = " ".join(
        f"{key}={value if isinstance(value, str) else repr(value)}"
        for key, value in sorted(event.items())
    )
    line = f"{stamp} [{level:<9}] {name:<30} {fields}".rstrip()
    return f"{line}\n{trace}" if trace else line


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """Print to whatever ``sys.stderr`` is now (test runners swap it)."""
    return structlog.PrintLogger(file=sys.stderr)
