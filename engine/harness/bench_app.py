"""The app ``jobcharts bench`` runs workers with: a no-op kind (``noop``, and ``anoop``
its ``async def`` twin) whose handler appends ``<job id> <start time>`` to the file named by
``$JOBCHARTS_BENCH_LOG``, so every run can check, outside the database, that each job's
handler ran exactly once.
"""

from __future__ import annotations

import os
import time

from pydantic import BaseModel

from engine import Engine, Invariant, JobContext

LOG_ENV = "JOBCHARTS_BENCH_LOG"
TRACING_ENV = "JOBCHARTS_BENCH_TRACING"  # set: spans on, exported by the SDK in batches


def _tracing() -> bool:
    """With ``$JOBCHARTS_BENCH_TRACING`` set, configure OpenTelemetry's SDK (a batch span
    processor and an exporter that drops the spans: what a traced worker pays, without a
    collector's network) and turn the engine's spans on."""
    if not os.environ.get(TRACING_ENV):
        return False
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropped(SpanExporter):
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    trace.set_tracer_provider(provider)
    return True


engine = Engine(tracing=_tracing())


class Noop(BaseModel):
    n: int = 0


_log: list[int] = []  # the log's file descriptor, opened on the first job of a process


def _fd() -> int:
    if not _log:
        _log.append(os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644))
    return _log[0]


@engine.job(payload=Noop, idempotency=Invariant("a no-op that only logs its start"), kind="noop")
def noop(ctx: JobContext, p: Noop) -> None:
    # One write of one short line on an O_APPEND descriptor: lines never interleave.
    os.write(_fd(), f"{ctx.job_id} {time.time()!r}\n".encode())


@engine.job(payload=Noop, idempotency=Invariant("a no-op that only logs its start"), kind="anoop")
async def anoop(ctx: JobContext, p: Noop) -> None:
    os.write(_fd(), f"{ctx.job_id} {time.time()!r}\n".encode())
