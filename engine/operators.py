"""Operator actions on one job: requeue (a quarantined or cancelled job runs again from
the start) and cancel (at once when no handler holds the job, else by request)."""

from __future__ import annotations

import functools
from dataclasses import replace

from engine.errors import JobNotFound, TransitionNotAllowed
from engine.moves import cancel_enabled, facts
from engine.registry import DEFAULT_KEY_TTL
from engine.runtime import Runtime
from engine.store import JobRow
from statecharts import Chart, ChartError, CompiledChart, T, compile_chart, lifecycle

CANCEL_ATTEMPTS = 5  # a job claimed between our read and our write is looked at again


class Changed(TransitionNotAllowed):
    """The job changed between reading it and applying an operator's transition."""


def chart_of(rt: Runtime, name: str) -> Chart | None:
    """The chart named ``name``: a registered one, or the built-in lifecycle."""
    chart = rt.registry.chart(name)
    if chart is None and name == "lifecycle":
        chart = lifecycle()
    return chart


def requeue(rt: Runtime, job_id: int) -> str:
    return apply(rt, job_id, T.REQUEUE)


def cancel(rt: Runtime, job_id: int) -> str:
    """Cancel a job that has not finished; returns the state it moved to or "requested".

    The cancel rule: a job no handler holds takes its chart's cancel at once; a job a
    handler holds gets a request (honoured before its next step, instead of a retry, or
    from the state its outcome leads to); a state with no cancel refuses.
    """
    for _ in range(CANCEL_ATTEMPTS):
        row = _row(rt, job_id)
        if row.lease_token is None or row.finished_at is not None:
            try:
                return apply(rt, job_id, T.CANCEL, row)
            except Changed:
                continue  # claimed meanwhile: look again
        spec = rt.registry.find(row.kind)
        compiled = spec.compiled if spec else compiled_lifecycle()
        if not cancel_enabled(compiled, row, rt.now()):
            raise TransitionNotAllowed(
                f"cannot cancel job {job_id}: a handler is running it in {row.state!r}, "
                f"and chart {row.chart!r} has no cancel from there"
            )
        if rt.store.job_request_cancel(row, rt.now()):
            rt.telemetry.info("job.cancel_requested", job_id=job_id, kind=row.kind, state=row.state)
            return "requested"
    raise TransitionNotAllowed(f"job {job_id} keeps changing; try cancel again")


def apply(rt: Runtime, job_id: int, trigger: str, row: JobRow | None = None) -> str:
    """Apply an operator's ``trigger`` to the job; returns the state it moved to."""
    row = row or _row(rt, job_id)
    chart = chart_of(rt, row.chart)
    if chart is None:
        raise ChartError(f"job {job_id} uses chart {row.chart!r}, which this app does not know")
    spec = rt.registry.find(row.kind)
    compiled = spec.compiled if spec else compiled_lifecycle()
    now = rt.now()
    transition = compiled.fire(row.state, trigger, facts(row, now))
    if transition is None:
        allowed = sorted({s for t in chart.transitions if t.trigger == trigger for s in t.sources})
        raise TransitionNotAllowed(
            f"cannot {trigger} job {job_id}: it is {row.state!r}; {trigger} applies to "
            f"jobs in {allowed}"
        )
    move = rt.moves.from_row(spec, row, transition, now)
    move = replace(move, event=replace(move.event, detail={"by": "operator"}))
    if trigger == T.REQUEUE:
        ttl = spec.key_ttl if spec else DEFAULT_KEY_TTL
        holder = rt.store.job_requeue(move, row.kind, row.idempotency_key, now + ttl)
        if holder not in (0, job_id):
            raise TransitionNotAllowed(
                f"cannot requeue job {job_id}: its idempotency key {row.idempotency_key!r} "
                f"now belongs to job {holder}, and stays with it until the key's TTL has "
                "passed and that job is final; that job does the work"
            )
        applied = holder == job_id
    else:
        applied = rt.store.job_transition_many([move])[0]
    if not applied:
        raise Changed(f"job {job_id} changed while applying {trigger}; try again")
    rt.telemetry.moved(
        trigger, job_id=job_id, kind=row.kind, from_state=row.state, to_state=transition.dest
    )
    return transition.dest


@functools.cache
def compiled_lifecycle() -> CompiledChart:
    """The built-in chart, compiled once: operators act on jobs of kinds no app registers."""
    return compile_chart(lifecycle())


def _row(rt: Runtime, job_id: int) -> JobRow:
    row = rt.store.job_get(job_id)
    if row is None:
        raise JobNotFound(f"no job with id {job_id}")
    return row
