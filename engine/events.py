"""The one instrumentation point: every persisted transition, claim, rescue, fenced result
and schedule firing is reported here as a named event with its fields.

Logs are the default subscriber (structlog, under the names the docs list); metrics and
traces attach their own handlers with ``Telemetry.attach`` instead of being called from
each lifecycle verb (Oban's telemetry, around the engine's verbs).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import structlog

logger = structlog.get_logger("jobcharts")


class Event(NamedTuple):
    """One thing the engine did: ``name`` (e.g. ``job.rescued``), a log level, its fields."""

    name: str
    level: str
    fields: dict[str, Any]


Handler = Callable[[Event], None]


LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}  # as the logging module's
_threshold = [LEVELS["info"]]  # what log_event passes on; configure_logging changes it
_configured = [False]  # the CLI (configure_logging) or the app (structlog) set logging up
# The CLI's pipeline, assembled once (structlog's configuration then, and a logger built
# from it): the structlog proxy would assemble a new logger per line, a third of its cost.
_assembled: list[tuple[dict[str, Any], Any] | None] = [None]

# An app that has not configured logging hears nothing from the library (the convention
# of Python libraries): events go to the standard ``jobcharts`` logger, which has a
# NullHandler, until the app configures logging or structlog.
stdlib_logger = logging.getLogger("jobcharts")
stdlib_logger.addHandler(logging.NullHandler())


def set_log_threshold(level: int, assembled: tuple[dict[str, Any], Any] | None = None) -> None:
    """Pass events from ``level`` (a ``logging`` level number) up to structlog. Debug events
    are per job and per call: skipped before any formatting unless asked for.

    ``assembled``: ``structlog.get_config()`` just after the CLI configured it, and a
    logger built from it, used while structlog's configuration is still that one (an app
    that configures structlog after the CLI is heard instead)."""
    _threshold[0] = level
    _configured[0] = True
    _assembled[0] = assembled


def log_event(event: Event) -> None:
    """The default subscriber: one structlog line per event from the threshold up, once
    logging is configured (by the CLI or the app's structlog); else the standard
    ``jobcharts`` logger, silent unless the app's logging configuration says otherwise."""
    level = LEVELS.get(event.level, 40)
    if level < _threshold[0]:
        return
    if _configured[0] or structlog.is_configured():
        getattr(_structlog_logger(), event.level)(event.name, **event.fields)
    elif stdlib_logger.isEnabledFor(level):
        stdlib_logger.log(level, "%s %s", event.name, event.fields, extra={"jobcharts": event})


def _structlog_logger() -> Any:
    """The CLI's assembled logger while its configuration holds, else structlog's proxy."""
    assembled = _assembled[0]
    if assembled is None:
        return logger
    then, built = assembled
    now = structlog.get_config()
    same = (  # unrolled: this runs once per log line
        now["processors"] is then["processors"]
        and now["logger_factory"] is then["logger_factory"]
        and now["wrapper_class"] is then["wrapper_class"]
        and now["context_class"] is then["context_class"]
    )
    return built if same else logger


class Telemetry:
    """Where the engine reports what it does; subscribers are called in order."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = [log_event]
        # The debug events anyone other than the log wants (a subscriber's ``debug_events``
        # attribute; None: all of them): the others are skipped before they are built.
        self._debug: set[str] | None = set()
        self._held = threading.local()  # this thread's held() buffer, if open

    @contextmanager
    def held(self) -> Iterator[None]:
        """Events this thread emits inside are passed on at a normal exit and dropped on an
        error: they told of a transaction that rolled back (its retry tells them again)."""
        buffer: list[Event] = []
        self._held.buffer = buffer
        try:
            yield
        finally:
            self._held.buffer = None
        for event in buffer:
            self._deliver(event)

    @property
    def subscribed(self) -> bool:
        """Whether anything besides the log listens (metrics, traces, a test): the verbs
        skip building figures nobody reads."""
        return self._handlers != [log_event]

    def attach(self, handler: Handler) -> None:
        self._handlers.append(handler)
        self._wanted()

    def detach(self, handler: Handler) -> None:
        self._handlers.remove(handler)
        self._wanted()

    def _wanted(self) -> None:
        wanted: set[str] = set()
        for handler in self._handlers:
            if handler is log_event:
                continue
            names = getattr(handler, "debug_events", None)
            if names is None:  # it wants every event
                self._debug = None
                return
            wanted |= set(names)
        self._debug = wanted

    def emit(self, name: str, level: str = "info", **fields: Any) -> None:
        if (
            level == "debug"
            and _threshold[0] > LEVELS["debug"]
            and self._debug is not None
            and name not in self._debug
        ):
            return  # nobody would see it: the enqueue path's common case
        buffer: list[Event] | None = getattr(self._held, "buffer", None)
        if buffer is not None:
            if fields.get("exc_info") is True:  # the exception is gone by delivery time
                fields["exc_info"] = sys.exc_info()
            buffer.append(Event(name, level, fields))
            return
        self._deliver(Event(name, level, fields))

    def _deliver(self, event: Event) -> None:
        for handler in self._handlers:
            try:
                handler(event)
            except Exception as error:  # a broken subscriber must not break the engine
                logger.warning(
                    "telemetry.handler_failed", failed_event=event.name, error=repr(error)
                )

    def moved(
        self,
        trigger: str,
        *,
        job_id: int,
        kind: str,
        from_state: str,
        to_state: str,
        level: str = "info",
        **extra: Any,
    ) -> None:
        """A transition taken without a handler (a timer, an operator, a hand-back):
        ``job.<trigger>``."""
        self.emit(
            f"job.{trigger}",
            level,
            job_id=job_id,
            kind=kind,
            from_state=from_state,
            to_state=to_state,
            **extra,
        )

    def info(self, name: str, **fields: Any) -> None:
        self.emit(name, "info", **fields)

    def warning(self, name: str, **fields: Any) -> None:
        self.emit(name, "warning", **fields)

    def error(self, name: str, **fields: Any) -> None:
        self.emit(name, "error", **fields)
