"""Claim: take due jobs under one new lease, then mark the ones about to run as started.

A due job whose state has no ``start`` enabled takes its timer instead (a polling state's
deadline, a wait state's delay), and a job an operator asked to cancel is cancelled: those
moves happen in the claim's transaction, without running a handler.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from engine.moves import Moves, facts
from engine.outcomes import Claimed, Outcome
from engine.registry import JobSpec
from engine.runtime import Runtime
from engine.store import JobRow, Move
from engine.strays import is_stray, judge, report_move
from statecharts import TIMER_TRIGGERS, ChartError, T


@dataclass
class Batch:
    """Jobs claimed together under one lease token."""

    token: str
    jobs: list[Claimed]
    timed: int = 0  # jobs moved by a timer (deadline, delay) or a cancel instead of claimed
    held: bool = False  # a global limit had no room left: its due jobs wait
    free_at: datetime | None = None  # when a full rate limit frees its next slot


def claim(
    rt: Runtime,
    now: datetime,
    limit: int,
    *,
    queues: Sequence[str] | None = None,
    start: bool = False,
) -> Batch:
    """Claim up to ``limit`` due jobs of the registered kinds under one new lease.

    ``start``: their handlers start as soon as the claim commits (one free handler thread
    each), so the claim records the start too and no ``mark_started`` follows.
    """
    registry = rt.registry
    specs = registry.specs
    token = uuid.uuid4().hex
    if not specs or limit <= 0:
        return Batch(token, [])
    states = sorted({s for spec in specs for s in spec.claim_states})
    leased_at: list[datetime] = []

    def plan(row: JobRow, tx_time: datetime | None) -> Move | None:
        spec = registry.find(row.kind)
        if spec is None:
            return None
        moves: Moves = rt.moves
        if is_stray(spec, row):  # a deploy's old state, a corrupt row: never claimed blindly
            verdict = judge(moves, spec, row, now)
            return verdict.move if verdict is not None else None
        try:
            cancelled = moves.requested_cancel(spec, row, now)
            if cancelled is not None:
                return cancelled
            transition = spec.compiled.fire(row.state, T.START, facts(row, now))
            if transition is None:
                for trigger in TIMER_TRIGGERS:
                    timed = moves.timer(spec, row, trigger, now)
                    if timed is not None:
                        return timed
                return None
        except ChartError as error:  # a state its chart no longer has
            rt.telemetry.error("job.unclaimable", job_id=row.id, kind=row.kind, error=str(error))
            return None
        if not leased_at:
            # Read inside the claim's transaction, after its lock was granted: a wait for
            # the lock must not eat into the lease.
            leased_at.append(rt.lease_base(now, tx_time))
        return moves.start(
            spec,
            row,
            transition,
            leased_at=leased_at[0],
            lease_seconds=rt.lease_seconds,
            token=token,
            now=now,
            started=start,
        )

    def reread() -> datetime:
        """The claim's time, read again once a limited claim holds its scopes' locks."""
        nonlocal now
        now = max(now, rt.now())
        return now

    held, free_at = False, None
    if registry.limits:
        limited = rt.store.job_claim_limited(
            clock=reread,
            limit=limit,
            kinds=registry.kinds,
            states=states,
            plan=plan,
            limits=registry.limits.for_store(),
            starts=_starts,
            timer_states=_timer_only_states(specs),
            queues=queues,
        )
        moved, held, free_at = limited.pairs, limited.held, limited.free_at
    else:
        moved = rt.store.job_claim_due(
            now=now, limit=limit, kinds=registry.kinds, states=states, plan=plan, queues=queues
        )
    pairs = [(row, move) for row, move in moved if move.event.trigger == T.START]
    for row, move in moved:
        if move.event.trigger != T.START:
            report_move(rt.telemetry, row, move)
    # One query for the whole batch: a first attempt after a requeue has steps too. A job
    # never claimed before (version 0: its first claim) cannot have any: no query at all.
    steps = rt.store.step_get_many([row.id for row, _ in pairs if row.version > 0])
    jobs = [
        Claimed(
            job_id=row.id,
            kind=row.kind,
            state=move.values["state"],
            version=row.version + 1,
            lease_token=token,
            attempt=move.values["attempt"],
            max_attempts=row.max_attempts,
            payload=row.payload,
            correlation_id=row.correlation_id,
            spec=registry.get(row.kind),
            steps=steps.get(row.id, {}),
            deadline=row.deadline,
            trace_context=row.trace_context,
        )
        for row, move in pairs
    ]
    if jobs:
        lags = []
        if rt.telemetry.subscribed and leased_at:  # due -> start, for the lag histogram
            lags = [
                (row.kind, (leased_at[0] - row.due_at).total_seconds())
                for row, _ in pairs
                if row.due_at is not None
            ]
        rt.telemetry.emit("jobs.claimed", "debug", jobs=len(jobs), worker=rt.worker_id, lags=lags)
    return Batch(token, jobs, timed=len(moved) - len(pairs), held=held, free_at=free_at)


def _timer_only_states(specs: Sequence[JobSpec]) -> list[str]:
    """States a due job leaves by a timer only, never by a start (a wait state's delay)."""
    timed: set[str] = set()
    started: set[str] = set()
    for spec in specs:
        for transition in spec.chart.transitions:
            if transition.trigger in TIMER_TRIGGERS:
                timed.update(transition.sources)
            elif transition.trigger == T.START:
                started.update(transition.sources)
    return sorted(timed - started)


def _starts(move: Move) -> bool:
    """A move that hands the job to a handler (what global limits count)."""
    return move.event.trigger == T.START


def mark_started(rt: Runtime, batch: Batch, jobs: list[Claimed], now: datetime) -> list[Claimed]:
    """Record that ``jobs``' handlers start now; return those still under the lease.

    A job asked to cancel since its claim is cancelled now rather than run.
    """
    store = rt.store
    held = store.job_mark_started([c.job_id for c in jobs], batch.token, now)
    lost = [c for c in jobs if c.job_id not in held]
    if lost:
        rows = store.job_get_many(c.job_id for c in lost)
        asked = []
        for c in lost:
            row = rows.get(c.job_id)
            if row is None or row.cancel_requested_at is None:
                continue
            planned = rt.moves.cancel_held(Outcome(c, T.CANCEL), now, row)
            if planned is None:
                rt.telemetry.error("job.uncancellable", job_id=c.job_id, state=c.state)
                continue
            asked.append(planned.move)
        done = {
            m.job_id for m, ok in zip(asked, store.job_transition_many(asked), strict=True) if ok
        }
        for claimed in lost:
            if claimed.job_id in done:
                rt.telemetry.info(
                    "job.cancel", job_id=claimed.job_id, kind=claimed.kind, before="start"
                )
            else:
                rt.telemetry.warning(
                    "attempt.lease_lost_before_start", job_id=claimed.job_id, kind=claimed.kind
                )
    return [c for c in jobs if c.job_id in held]
