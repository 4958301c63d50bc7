"""Enqueue: validate payloads, build the rows of new jobs, store them durably (deduped).

Shared by ``Engine.enqueue`` and the schedules service (a fired slot is an enqueue keyed
by its slot), so a job is built one way whoever creates it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from engine.context import correlation_in_context
from engine.errors import PayloadTooLarge
from engine.moves import CREATED
from engine.registry import JobSpec
from engine.runtime import Runtime
from engine.store import NewJob
from engine.store.store import AppConnection
from engine.tracing import active as tracing_active


def new_job(
    spec: JobSpec,
    payload: str,
    *,
    key: str | None,
    key_ttl: timedelta,
    worker_id: str,
    due_at: datetime | None = None,
    delay: timedelta = timedelta(0),
    priority: int | None = None,
    queue: str | None = None,
    correlation_id: str | None = None,
    detail: dict[str, Any] | None = None,
    trace_context: str | None = None,
) -> NewJob:
    """A new job of ``spec``'s kind in its chart's initial state (its creation event is
    written with it); ``payload`` is its JSON text, refused over the engine's size limit."""
    limit = spec.max_payload_bytes
    if limit is not None and len(payload) > limit:
        raise PayloadTooLarge(
            f"the payload of a {spec.kind!r} job is {len(payload):,} bytes of JSON, over the "
            f"limit of {limit:,} (Engine(max_payload_bytes=...)); nothing stored. Keep large "
            "data elsewhere and enqueue a reference to it"
        )
    return NewJob(
        kind=spec.kind,
        chart=spec.chart.name,
        state=spec.chart.initial.name,
        payload=payload,
        idempotency_key=key,
        max_attempts=spec.first_max_attempts,
        priority=spec.priority if priority is None else priority,
        queue=queue or spec.queue,
        correlation_id=correlation_id or correlation_in_context() or os.urandom(16).hex(),
        trigger=CREATED,
        worker=worker_id,
        detail=detail,
        due_at=due_at,
        delay=delay,
        key_ttl=key_ttl,
        chart_version=spec.version,
        trace_context=trace_context,
    )


def enqueue_many(
    rt: Runtime,
    kind: str,
    payloads: Sequence[BaseModel | dict[str, Any] | None],
    *,
    delay: float | timedelta | None = None,
    run_at: datetime | None = None,
    priority: int | None = None,
    queue: str | None = None,
    correlation_id: str | None = None,
    connection: AppConnection | None = None,
) -> list[int]:
    """Validate every payload, then store all the jobs in one transaction (or the caller's)."""
    spec = rt.registry.get(kind)
    models = [validate(spec, payload) for payload in payloads]
    due_at, wait = when_due(delay, run_at)
    check_options(priority, queue, correlation_id)
    tracing = tracing_active()
    if tracing is not None:
        with tracing.enqueue(kind, len(models)) as parent:
            return _insert(
                rt, spec, models, due_at, wait, priority, queue, correlation_id, connection, parent
            )
    return _insert(rt, spec, models, due_at, wait, priority, queue, correlation_id, connection)


def _insert(
    rt: Runtime,
    spec: JobSpec,
    models: Sequence[BaseModel],
    due_at: datetime | None,
    wait: timedelta,
    priority: int | None,
    queue: str | None,
    correlation_id: str | None,
    connection: AppConnection | None,
    trace_context: str | None = None,
) -> list[int]:
    """Build the rows of ``models`` and store them; report what happened."""
    kind = spec.kind
    jobs = [
        new_job(
            spec,
            model.model_dump_json(),
            key=spec.key_for(model),
            key_ttl=spec.key_ttl,
            worker_id=rt.worker_id,
            due_at=due_at,
            delay=wait,
            priority=priority,
            queue=queue,
            correlation_id=correlation_id,
            trace_context=trace_context,
        )
        for model in models
    ]
    results = rt.store.job_insert_many(jobs, now=rt.insert_time(), connection=connection)
    telemetry = rt.telemetry
    if len(jobs) == 1:
        job, (job_id, inserted) = jobs[0], results[0]
        if inserted:
            telemetry.emit(
                "job.enqueued",
                "debug",
                job_id=job_id,
                kind=kind,
                correlation_id=job.correlation_id,
                idempotency_key=job.idempotency_key,
            )
        else:  # the existing job keeps its own correlation id
            telemetry.emit(
                "job.deduplicated",
                "debug",
                job_id=job_id,
                kind=kind,
                idempotency_key=job.idempotency_key,
            )
    elif jobs:
        fresh = sum(1 for _, inserted in results if inserted)
        telemetry.emit(
            "jobs.enqueued", "debug", kind=kind, jobs=fresh, deduplicated=len(jobs) - fresh
        )
    return [job_id for job_id, _ in results]


def check_options(priority: Any, queue: Any, correlation_id: Any) -> None:
    """Refuse an enqueue option of the wrong type before anything is stored (a priority
    of "x" would be stored as text on SQLite and sort wrongly for ever)."""
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise TypeError(f"priority must be an int, got {priority!r}")
    if priority is not None and not -(2**31) <= priority < 2**31:
        raise ValueError(f"priority must fit in 32 bits, got {priority}")
    if queue is not None and (not isinstance(queue, str) or not queue or len(queue) > 100):
        raise ValueError(f"queue must be a non-empty str of at most 100 chars, got {queue!r}")
    if correlation_id is not None and (
        not isinstance(correlation_id, str) or not correlation_id or len(correlation_id) > 64
    ):
        raise ValueError(
            f"correlation_id must be a non-empty str of at most 64 chars, got {correlation_id!r}"
        )


def when_due(
    delay: float | timedelta | None, run_at: datetime | None
) -> tuple[datetime | None, timedelta]:
    """A fixed due time (``run_at``) or a wait after the insert (``delay``), checked."""
    if run_at is not None:
        if delay is not None:
            raise ValueError("give delay or run_at, not both")
        if not isinstance(run_at, datetime):
            raise TypeError(f"run_at must be a datetime, got {run_at!r}")
        if run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware")
        return run_at, timedelta(0)
    if delay is None:
        return None, timedelta(0)
    if isinstance(delay, bool) or not isinstance(delay, int | float | timedelta):
        raise TypeError(f"delay must be seconds (a number) or a timedelta, got {delay!r}")
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if not seconds >= 0:  # also refuses NaN
        raise ValueError(f"delay must be >= 0 seconds, got {seconds}")
    return None, timedelta(seconds=seconds)


def validate(spec: JobSpec, payload: BaseModel | dict[str, Any] | None) -> BaseModel:
    if isinstance(payload, spec.payload):
        return spec.payload.model_validate(payload.model_dump())
    if isinstance(payload, BaseModel):
        payload = payload.model_dump()
    return spec.payload.model_validate(payload if payload is not None else {})
