"""Enqueue: validate payloads, build the rows of new jobs, store them durably (deduped).

Shared by ``Engine.enqueue`` and the schedules service (a fired slot is an enqueue keyed
by its slot), so a job is built one way whoever creates it.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel

from engine.moves import CREATED
from engine.registry import JobSpec
from engine.runtime import Runtime
from engine.store import EventRow, NewJob
from engine.store.store import AppConnection


def new_job(
    spec: JobSpec,
    payload: dict[str, Any],
    *,
    key: str | None,
    key_ttl: timedelta,
    now: datetime,
    due: datetime,
    worker_id: str,
    priority: int | None = None,
    queue: str | None = None,
    correlation_id: str | None = None,
    detail: dict[str, Any] | None = None,
) -> tuple[NewJob, EventRow]:
    """A new job of ``spec``'s kind in its chart's initial state, with its creation event."""
    initial = spec.chart.initial.name
    job = NewJob(
        kind=spec.kind,
        chart=spec.chart.name,
        state=initial,
        payload=payload,
        idempotency_key=key,
        max_attempts=spec.first_max_attempts,
        priority=spec.priority if priority is None else priority,
        queue=queue or spec.queue,
        due_at=due,
        correlation_id=correlation_id or uuid.uuid4().hex,
        created_at=now,
        key_expires_at=now + key_ttl if key is not None else None,
    )
    return job, EventRow(CREATED, None, initial, 0, now, worker_id, detail)


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
    keys = [spec.key_for(model) for model in models]
    now = rt.now()
    due = due_time(now, delay, run_at)
    items = [
        new_job(
            spec,
            model.model_dump(mode="json"),
            key=key,
            key_ttl=spec.key_ttl,
            now=now,
            due=due,
            worker_id=rt.worker_id,
            priority=priority,
            queue=queue,
            correlation_id=correlation_id,
        )
        for model, key in zip(models, keys, strict=True)
    ]
    results = rt.store.job_insert_many(items, connection=connection)
    if len(items) == 1:
        (job, _), (job_id, inserted) = items[0], results[0]
        if inserted:
            rt.telemetry.info(
                "job.enqueued",
                job_id=job_id,
                kind=kind,
                correlation_id=job.correlation_id,
                idempotency_key=job.idempotency_key,
            )
        else:  # the existing job keeps its own correlation id
            rt.telemetry.info(
                "job.deduplicated", job_id=job_id, kind=kind, idempotency_key=job.idempotency_key
            )
    elif items:
        fresh = sum(1 for _, inserted in results if inserted)
        rt.telemetry.info("jobs.enqueued", kind=kind, jobs=fresh, deduplicated=len(items) - fresh)
    return [job_id for job_id, _ in results]


def due_time(now: datetime, delay: float | timedelta | None, run_at: datetime | None) -> datetime:
    if run_at is not None:
        if run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware")
        return run_at
    if delay is None:
        return now
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if seconds < 0:
        raise ValueError(f"delay must be >= 0, got {seconds}")
    return now + timedelta(seconds=seconds)


def validate(spec: JobSpec, payload: BaseModel | dict[str, Any] | None) -> BaseModel:
    if isinstance(payload, spec.payload):
        return spec.payload.model_validate(payload.model_dump())
    if isinstance(payload, BaseModel):
        payload = payload.model_dump()
    return spec.payload.model_validate(payload if payload is not None else {})
