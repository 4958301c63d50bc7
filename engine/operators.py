"""Operator actions on one job: requeue (a quarantined or cancelled job runs again from
the start) and cancel (at once when no handler holds the job, else by request)."""

from __future__ import annotations

import functools
from dataclasses import replace
from datetime import datetime
from typing import Any

from engine.errors import JobNotFound, TransitionNotAllowed
from engine.moves import cancel_enabled, facts
from engine.registry import DEFAULT_KEY_TTL, JobSpec
from engine.runtime import Runtime
from engine.store import JobRow, Move
from statecharts import (
    Chart,
    CompiledChart,
    Effect,
    S,
    T,
    Transition,
    compile_chart,
    lifecycle,
)

CANCELLED = str(S.CANCELLED)

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
        spec = rt.registry.find(row.kind)
        compiled = spec.compiled if spec else compiled_lifecycle()
        off_chart = row.state not in compiled.chart.state_names  # (apply explains)
        if row.lease_token is None or row.finished_at is not None or off_chart:
            try:
                return apply(rt, job_id, T.CANCEL, row)
            except Changed:
                continue  # claimed meanwhile: look again
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
    spec = rt.registry.find(row.kind)
    now = rt.now()
    if spec is not None and row.state not in spec.state_names:
        move = _off_chart(rt, spec, row, trigger, now)
        transition_dest = str(move.values["state"])
    else:
        chart = chart_of(rt, row.chart)
        if chart is None or (spec is None and not chart.has_state(row.state)):
            raise TransitionNotAllowed(
                f"cannot {trigger} job {job_id}: it is kind {row.kind!r} of chart "
                f"{row.chart!r} in state {row.state!r}, which this app does not register; "
                "run the command with --app naming the app that registers that kind"
            )
        compiled = spec.compiled if spec else compiled_lifecycle()
        transition = compiled.fire(row.state, trigger, facts(row, now))
        if transition is None:
            allowed = sorted(
                {s for t in chart.transitions if t.trigger == trigger for s in t.sources}
            )
            raise TransitionNotAllowed(
                f"cannot {trigger} job {job_id}: it is {row.state!r}; {trigger} applies to "
                f"jobs in {allowed}"
            )
        move = rt.moves.from_row(spec, row, transition, now)
        detail = {"by": "operator", **_version_switch(move)}
        move = replace(move, event=replace(move.event, detail=detail))
        transition_dest = transition.dest
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
        trigger, job_id=job_id, kind=row.kind, from_state=row.state, to_state=transition_dest
    )
    return transition_dest


def _version_switch(move: Move) -> dict[str, Any]:
    detail = move.event.detail or {}
    return {"chart_version": detail["chart_version"]} if "chart_version" in detail else {}


def _off_chart(rt: Runtime, spec: JobSpec, row: JobRow, trigger: str, now: datetime) -> Move:
    """An operator's cancel or requeue of a job in a state its chart does not have (a
    deploy removed it, or the row was edited): the job ends cancelled, or starts over from
    the chart's first state. Refused while a worker (of another version) holds it."""
    chart = spec.chart
    where = f"state {row.state!r}, which chart {chart.name!r} version {spec.version} lacks"
    lease = row.lease_expires_at
    if lease is not None and lease > now:
        raise TransitionNotAllowed(
            f"cannot {trigger} job {row.id}: it is in {where}, and a worker (of another "
            f"version of the app) holds it until {lease.isoformat()}; try again once that "
            "attempt ends"
        )
    if trigger == T.CANCEL and chart.has_state(CANCELLED):
        transition = Transition(
            T.CANCEL, (row.state,), CANCELLED, (), (Effect.RELEASE_LEASE, Effect.FINISH)
        )
    elif trigger == T.REQUEUE:
        transition = Transition(
            T.REQUEUE,
            (row.state,),
            chart.initial.name,
            (),
            (Effect.RESET_ATTEMPTS, Effect.RELEASE_LEASE),
            operator=True,
        )
    else:
        raise TransitionNotAllowed(f"cannot {trigger} job {row.id}: it is in {where}")
    return rt.moves.off_chart(spec, row, transition, now, why=f"from {where}")


@functools.cache
def compiled_lifecycle() -> CompiledChart:
    """The built-in chart, compiled once: operators act on jobs of kinds no app registers."""
    return compile_chart(lifecycle())


def _row(rt: Runtime, job_id: int) -> JobRow:
    row = rt.store.job_get(job_id)
    if row is None:
        raise JobNotFound(f"no job with id {job_id}")
    return row
