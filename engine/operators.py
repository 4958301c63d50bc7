"""Operator actions on one job: requeue (a quarantined or cancelled job runs again from
the start) and cancel (at once when no handler holds the job, else by request).

Each action is planned from the job as read (``plan``: the compare-and-set to apply, or a
cancel request, or ``Refused`` with the reason) and then written (``perform``, one job per
transaction; ``engine.bulk`` writes many planned actions per transaction instead).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, replace
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
REQUESTED = "requested"  # a cancel of a job a handler holds: asked, not yet taken

CANCEL_ATTEMPTS = 5  # a job claimed between our read and our write is looked at again


class Changed(TransitionNotAllowed):
    """The job changed between reading it and applying an operator's transition."""


class Refused(TransitionNotAllowed):
    """The job cannot take the operator's action as it is; ``why`` says why (without the
    job's id, for reports over many jobs) and ``code`` names the kind of reason."""

    NOT_FOUND = "not_found"  # no job with that id
    NOT_APPLICABLE = "not_applicable"  # the trigger does not leave the job's state
    UNREGISTERED = "unregistered"  # a kind or chart this app does not register
    RUNNING = "running"  # a handler holds it in a state its chart cannot cancel from
    HELD = "held"  # off its chart, held by a worker of another version
    OFF_CHART = "off_chart"  # off its chart, and the chart has no such way out
    KEY_TAKEN = "key_taken"  # requeue: another job holds its dedupe key live
    CHANGED = "changed"  # it kept changing under us

    def __init__(self, trigger: str, job_id: int, why: str, code: str) -> None:
        super().__init__(f"cannot {trigger} job {job_id}: {why}")
        self.trigger = trigger
        self.job_id = job_id
        self.why = why
        self.code = code


@dataclass(frozen=True)
class Action:
    """An operator's trigger planned for one job as ``row`` read it: the compare-and-set
    ``move`` to ``dest``, or (``move`` None) a request that the handler holding the job
    stop, ``dest`` then being "requested". A requeue of a keyed job takes its dedupe
    ``key`` back first (live until ``key_expires_at``)."""

    row: JobRow
    trigger: str
    dest: str
    at: datetime
    move: Move | None = None
    key: str | None = None
    key_expires_at: datetime | None = None
    by: str | None = None  # who acts, when named (recorded with a cancel request)


def chart_of(rt: Runtime, name: str) -> Chart | None:
    """The chart named ``name``: a registered one, or the built-in lifecycle."""
    chart = rt.registry.chart(name)
    if chart is None and name == "lifecycle":
        chart = lifecycle()
    return chart


def requeue(rt: Runtime, job_id: int) -> str:
    return perform(rt, plan(rt, _row(rt, job_id), T.REQUEUE))


def cancel(rt: Runtime, job_id: int) -> str:
    """Cancel a job that has not finished; returns the state it moved to or "requested".

    The cancel rule: a job no handler holds takes its chart's cancel at once; a job a
    handler holds gets a request (honoured before its next step, instead of a retry, or
    from the state its outcome leads to); a state with no cancel refuses.
    """
    return act(rt, job_id, T.CANCEL)


def act(rt: Runtime, job_id: int, trigger: str, detail: Mapping[str, Any] | None = None) -> str:
    """Plan and perform ``trigger`` on one job, reading it again (up to CANCEL_ATTEMPTS
    times) when it changes between the read and the write; ``detail`` goes into the
    event (who acted, from where). Returns the state it moved to or "requested"."""
    for _ in range(CANCEL_ATTEMPTS):
        try:
            return perform(rt, plan(rt, _row(rt, job_id), trigger, detail))
        except Changed:
            continue  # claimed (or finished) meanwhile: look again
    raise kept_changing(trigger, job_id)


def plan(rt: Runtime, row: JobRow, trigger: str, detail: Mapping[str, Any] | None = None) -> Action:
    """What ``trigger`` (requeue or cancel) does to the job as ``row`` read it; ``detail``
    is added to the event's detail (a bulk action's run and filter). Writes nothing.

    Raises ``Refused`` when the job cannot take it as it is."""
    now = rt.now()
    spec = rt.registry.find(row.kind)
    if trigger == T.CANCEL and row.lease_token is not None and row.finished_at is None:
        compiled = spec.compiled if spec else compiled_lifecycle()
        if row.state in compiled.chart.state_names:  # (off the chart: _move explains)
            if not cancel_enabled(compiled, row, now):
                raise Refused(
                    trigger,
                    row.id,
                    f"a handler is running it in {row.state!r}, and chart {row.chart!r} has "
                    "no cancel from there",
                    Refused.RUNNING,
                )
            return Action(row, trigger, REQUESTED, now, by=_operator(detail))
    move = _move(rt, spec, row, trigger, now, detail or {})
    dest = str(move.values["state"])
    if trigger == T.REQUEUE and row.idempotency_key is not None:
        ttl = spec.key_ttl if spec else DEFAULT_KEY_TTL
        return Action(row, trigger, dest, now, move, row.idempotency_key, now + ttl)
    return Action(row, trigger, dest, now, move)


def perform(rt: Runtime, action: Action, *, level: str = "info") -> str:
    """Write one planned action in its own transaction; returns the state the job moved
    to or "requested". Raises ``Changed`` when the job is no longer as it was read, and
    ``Refused`` when another job holds the dedupe key a requeue needs."""
    row = action.row
    if action.move is None:
        if not rt.store.job_request_cancel(row, action.at, action.by):
            raise Changed(f"job {row.id} changed while asking its handler to stop")
    elif action.trigger == T.REQUEUE:
        holder = rt.store.job_requeue(
            action.move, row.kind, action.key, action.key_expires_at or action.at
        )
        if holder not in (0, row.id):
            raise key_taken(row, holder)
        if holder != row.id:
            raise Changed(f"job {row.id} changed while applying requeue; try again")
    elif not rt.store.job_transition_many([action.move])[0]:
        raise Changed(f"job {row.id} changed while applying {action.trigger}; try again")
    performed(rt, action, level=level)
    return action.dest


def performed(rt: Runtime, action: Action, *, level: str = "info", **extra: Any) -> None:
    """Report an action that was written (``job.<trigger>``, or ``job.cancel_requested``)."""
    row = action.row
    if action.move is None:
        who = {"operator": action.by} if action.by else {}
        rt.telemetry.emit(
            "job.cancel_requested",
            level,
            job_id=row.id,
            kind=row.kind,
            state=row.state,
            **who,
            **extra,
        )
    else:
        rt.telemetry.moved(
            action.trigger,
            job_id=row.id,
            kind=row.kind,
            from_state=row.state,
            to_state=action.dest,
            level=level,
            **extra,
        )


def _operator(detail: Mapping[str, Any] | None) -> str | None:
    name = (detail or {}).get("operator")
    return str(name)[:100] if name else None


def key_taken(row: JobRow, holder: int) -> Refused:
    """The refusal of a requeue whose dedupe key another job (``holder``) holds live."""
    return Refused(
        T.REQUEUE,
        row.id,
        f"its idempotency key {row.idempotency_key!r} now belongs to job {holder}, and stays "
        "with it until the key's TTL has passed and that job is final; that job does the work",
        Refused.KEY_TAKEN,
    )


def kept_changing(trigger: str, job_id: int) -> Refused:
    return Refused(trigger, job_id, f"it keeps changing; try {trigger} again", Refused.CHANGED)


def _move(
    rt: Runtime,
    spec: JobSpec | None,
    row: JobRow,
    trigger: str,
    now: datetime,
    extra: Mapping[str, Any],
) -> Move:
    """The compare-and-set taking ``trigger`` from the job as ``row`` read it."""
    if spec is not None and row.state not in spec.state_names:
        move = _off_chart(rt, spec, row, trigger, now)
        if extra:
            move = replace(move, event=replace(move.event, detail={**_detail(move), **extra}))
        return move
    chart = chart_of(rt, row.chart)
    if chart is None or (spec is None and not chart.has_state(row.state)):
        raise Refused(
            trigger,
            row.id,
            f"it is kind {row.kind!r} of chart {row.chart!r} in state {row.state!r}, which "
            "this app does not register; run the command with --app naming the app that "
            "registers that kind",
            Refused.UNREGISTERED,
        )
    compiled = spec.compiled if spec else compiled_lifecycle()
    transition = compiled.fire(row.state, trigger, facts(row, now))
    if transition is None:
        allowed = sorted({s for t in chart.transitions if t.trigger == trigger for s in t.sources})
        raise Refused(
            trigger,
            row.id,
            f"it is {row.state!r}; {trigger} applies to jobs in {allowed}",
            Refused.NOT_APPLICABLE,
        )
    move = rt.moves.from_row(spec, row, transition, now)
    detail = {"by": "operator", **extra, **_version_switch(move)}
    return replace(move, event=replace(move.event, detail=detail))


def _detail(move: Move) -> dict[str, Any]:
    return dict(move.event.detail or {})


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
        raise Refused(
            trigger,
            row.id,
            f"it is in {where}, and a worker (of another version of the app) holds it until "
            f"{lease.isoformat()}; try again once that attempt ends",
            Refused.HELD,
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
        raise Refused(trigger, row.id, f"it is in {where}", Refused.OFF_CHART)
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
