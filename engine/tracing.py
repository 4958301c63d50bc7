"""Traces (``pip install 'jobcharts[otel]'``): OpenTelemetry spans for enqueues and
attempts, so a web request's trace continues into its jobs and into the jobs they enqueue.

- ``jobcharts.enqueue <kind>``: a child of the caller's current span; its W3C
  ``traceparent`` is stored with the job (``jobs.trace_context``).
- ``jobcharts.attempt <kind>`` (``<kind>/<state>`` for a flow step): a child of that
  stored context and linked to it, opened while the handler runs, so the spans of the
  handler's own calls and the enqueues it makes nest under it. Its outcome is a span
  event with the transition's trigger; a failure is recorded on the span (exception,
  ERROR status).

jobcharts uses only the OpenTelemetry API: the app configures the SDK and its exporter as
it does for everything else. ``Engine(tracing=True)`` turns the spans on; off, nothing is
imported and nothing is paid.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from engine.errors import MissingExtra
from engine.outcomes import Failure

HINT = "tracing needs OpenTelemetry: pip install 'jobcharts[otel]'"


def _otel() -> tuple[Any, Any]:
    try:
        from opentelemetry import propagate, trace
    except ModuleNotFoundError as error:
        raise MissingExtra(HINT) from error
    return trace, propagate


class Tracing:
    """The spans of one engine (its tracer from the app's tracer provider)."""

    def __init__(self) -> None:
        trace, propagate = _otel()
        self._trace = trace
        self._propagate = propagate
        self.tracer = trace.get_tracer("jobcharts")

    @contextmanager
    def enqueue(self, kind: str, jobs: int) -> Iterator[str | None]:
        """A span around an enqueue; yields the traceparent to store with the jobs."""
        with self.tracer.start_as_current_span(
            f"jobcharts.enqueue {kind}",
            kind=self._trace.SpanKind.PRODUCER,
            attributes={"jobcharts.kind": kind, "jobcharts.jobs": jobs},
        ):
            carrier: dict[str, str] = {}
            self._propagate.inject(carrier)
            yield carrier.get("traceparent")

    @contextmanager
    def attempt(
        self, kind: str, state: str, attempt: int, job_id: int, parent: str | None, flow: bool
    ) -> Iterator[Any]:
        """The span of one attempt, current while its handler runs."""
        context = self._propagate.extract({"traceparent": parent}) if parent else None
        links = []
        if context is not None:
            linked = self._trace.get_current_span(context).get_span_context()
            if linked.is_valid:
                links.append(self._trace.Link(linked))
        name = f"jobcharts.attempt {kind}/{state}" if flow else f"jobcharts.attempt {kind}"
        with self.tracer.start_as_current_span(
            name,
            context=context,
            kind=self._trace.SpanKind.CONSUMER,
            links=links,
            attributes={
                "jobcharts.kind": kind,
                "jobcharts.state": state,
                "jobcharts.attempt": attempt,
                "jobcharts.job_id": job_id,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    def outcome(self, span: Any, trigger: str, failure: Failure | None) -> None:
        """The attempt's outcome as a span event; a failure recorded on the span (as an
        ``exception`` event of OpenTelemetry's conventions, and an ERROR status)."""
        span.add_event("jobcharts.outcome", {"jobcharts.trigger": trigger})
        if failure is not None:
            span.add_event(
                "exception",
                {
                    "exception.type": failure.error_class,
                    "exception.message": failure.message,
                    "exception.stacktrace": failure.traceback,
                },
            )
            status = self._trace.Status(self._trace.StatusCode.ERROR, failure.message[:200])
            span.set_status(status)


_active: list[Tracing] = []  # the process's tracing, once an engine turned it on


def enable() -> Tracing:
    """Turn spans on for this process (``Engine(tracing=True)``)."""
    if not _active:
        _active.append(Tracing())
    return _active[0]


def active() -> Tracing | None:
    return _active[0] if _active else None


def disable() -> None:
    """Turn spans off again (tests; an app switching tracing off at run time)."""
    _active.clear()
