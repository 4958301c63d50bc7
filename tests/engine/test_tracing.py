"""Traces with OpenTelemetry's SDK and its in-memory exporter (both backends): a web
request's span is the parent of the enqueue span, the attempt span continues that trace
(a child of the enqueue, and linked to it), jobs enqueued by a handler nest under its
attempt, outcomes are span events and failures are recorded on the span."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from engine import Engine, Invariant, RetryPolicy
from engine.tracing import disable

EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def _provider() -> Iterator[None]:
    """One SDK tracer provider for the process (OpenTelemetry allows one)."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(provider)
    yield


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    EXPORTER.clear()
    yield EXPORTER
    EXPORTER.clear()
    disable()  # the next tests run without spans


def by_name(exporter: InMemorySpanExporter) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for span in exporter.get_finished_spans():
        found.setdefault(span.name, []).append(span)
    return found


def test_a_request_trace_continues_into_its_job_and_the_jobs_it_enqueues(
    db_url: str, spans: InMemorySpanExporter
) -> None:
    engine = Engine(db_url, tracing=True)

    @engine.job(idempotency=Invariant("test"), kind="order")
    def order(ctx: Any, _p: Any) -> int:
        return engine.enqueue("mail")

    engine.job(idempotency=Invariant("test"), kind="mail")(lambda ctx, p: None)
    tracer = trace.get_tracer("the web app")
    with tracer.start_as_current_span("POST /orders") as request:
        engine.enqueue("order")
    engine.run_until_idle()
    found = by_name(spans)
    request_ctx = request.get_span_context()
    enqueue = found["jobcharts.enqueue order"][0]
    attempt = found["jobcharts.attempt order"][0]
    child_enqueue = found["jobcharts.enqueue mail"][0]
    child_attempt = found["jobcharts.attempt mail"][0]
    assert enqueue.parent.span_id == request_ctx.span_id
    assert attempt.context.trace_id == request_ctx.trace_id  # the same trace, end to end
    assert attempt.parent.span_id == enqueue.context.span_id
    assert [link.context.span_id for link in attempt.links] == [enqueue.context.span_id]
    assert child_enqueue.parent.span_id == attempt.context.span_id  # nested in the handler
    assert child_attempt.parent.span_id == child_enqueue.context.span_id
    assert child_attempt.context.trace_id == request_ctx.trace_id
    outcome = [e for e in attempt.events if e.name == "jobcharts.outcome"]
    assert outcome[0].attributes["jobcharts.trigger"] == "succeed"
    assert attempt.attributes["jobcharts.kind"] == "order"
    engine.close()


def test_a_failed_attempt_is_recorded_on_its_span(db_url: str, spans: InMemorySpanExporter) -> None:
    engine = Engine(db_url, tracing=True)

    @engine.job(idempotency=Invariant("test"), kind="flaky", retry=RetryPolicy(2, base=0))
    def flaky(ctx: Any, _p: Any) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("upstream down")

    engine.enqueue("flaky")
    engine.run_until_idle()
    first, second = sorted(
        by_name(spans)["jobcharts.attempt flaky"], key=lambda s: s.attributes["jobcharts.attempt"]
    )
    assert first.status.status_code == trace.StatusCode.ERROR
    exception = next(e for e in first.events if e.name == "exception")
    assert exception.attributes["exception.type"] == "ConnectionError"
    assert "upstream down" in exception.attributes["exception.message"]
    assert second.status.status_code == trace.StatusCode.UNSET
    assert first.context.trace_id == second.context.trace_id  # retries stay in the trace
    engine.close()
