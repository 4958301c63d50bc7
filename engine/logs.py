"""structlog set-up for the CLI (libraries only call ``structlog.get_logger``)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, cast

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
    renderers: list[structlog.typing.Processor] = (
        [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_json_line),
        ]
        if fmt == "json"
        else [structlog.processors.format_exc_info, console_line]
    )
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        utc_timestamp,
        *renderers,
    ]
    wrapper = structlog.make_filtering_bound_logger(numeric)
    structlog.configure(
        processors=processors,
        wrapper_class=wrapper,
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,  # a later configure (a test, the app) must hold
    )
    # What structlog's proxy assembles per call, once: BoundLoggerBase(logger, processors,
    # context) (typed as the protocol, which has no constructor).
    assembled = cast(Any, wrapper)(_STDERR_LINES, processors, {})
    set_log_threshold(numeric, (structlog.get_config(), assembled))


_second: list[tuple[int, str]] = [(-1, "")]  # the last whole second stamped, and its text


def utc_timestamp(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Any:
    """``timestamp``: now in UTC, as structlog's TimeStamper(fmt="iso", utc=True) writes
    it, at a third of its cost, on every line of a drain."""
    event["timestamp"] = iso_utc(time.time())
    return event


def iso_utc(now: float) -> str:
    """``now`` (seconds since the epoch) as ISO 8601 in UTC to the microsecond, e.g.
    ``2026-12-04T16:28:49.937612Z``; the date and time are formatted once per second."""
    second = int(now)
    stamped, text = _second[0]  # one tuple: threads never see a second with another's text
    if stamped != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second[0] = (second, text)
    return f"{text}.{int((now - second) * 1e6):06d}Z"


def _json_default(value: Any) -> Any:
    """What JSON cannot hold as it is: structlog's ``__structlog__`` form, else ``repr``."""
    try:
        return value.__structlog__()
    except AttributeError:
        return repr(value)


_JSON = json.JSONEncoder(default=_json_default)


def _json_line(event: Any, **_options: Any) -> str:
    """One JSON line from one encoder made once: ``json.dumps`` with a ``default`` builds a
    new encoder per call, a fifth of a line's cost."""
    return _JSON.encode(event)


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


class StderrLines:
    """A structlog logger writing each line to whatever ``sys.stderr`` is now (test runners
    swap it) in one ``write``, so two threads' lines do not interleave; out when the call
    returns (Python's stderr is line-buffered; any other stream is flushed)."""

    def msg(self, message: str) -> None:
        stream = sys.stderr
        if stream is None:  # no stderr at all (pythonw, some daemons): nowhere to write
            return
        stream.write(message + "\n")
        if not getattr(stream, "line_buffering", False):
            stream.flush()

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


_STDERR_LINES = StderrLines()


def _stderr_logger(*_args: object) -> StderrLines:
    """structlog's logger factory: the one stderr writer (it looks stderr up per line)."""
    return _STDERR_LINES
