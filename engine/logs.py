"""structlog set-up for the CLI (libraries only call ``structlog.get_logger``)."""

from __future__ import annotations

import logging
import sys

import structlog

from engine.events import set_log_threshold


def configure_logging(level: str = "info", fmt: str = "console") -> None:
    """Render jobcharts events to stderr as console lines or JSON, from ``level`` up."""
    numeric = logging.getLevelNamesMapping().get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    set_log_threshold(numeric)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """Print to whatever ``sys.stderr`` is now (test runners swap it)."""
    return structlog.PrintLogger(file=sys.stderr)
