"""Commit: persist the outcomes of finished attempts, each as its chart's transition.

All in one transaction; an attempt that lost its lease is fenced out. A retry refused
because an operator asked to cancel meanwhile becomes the cancel, and a cancel still
pending once a step has led elsewhere is taken from there. An outcome that cannot be
turned into a transition (or stored) is replaced by a permanent failure saying why.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from engine.attempt import report_finished
from engine.moves import Planned
from engine.outcomes import Claimed, ErrorClass, Failure, Outcome
from engine.report import TickReport
from engine.runtime import Runtime
from engine.store import Move
from statecharts import T


def commit(rt: Runtime, outcomes: Iterable[Outcome], now: datetime) -> TickReport:
    """Persist every outcome's transition in one transaction; fenced ones are dropped."""
    report = TickReport()
    planned = []
    for outcome in outcomes:
        if outcome.fenced:
            report.fenced += 1
            report_finished(rt.telemetry, outcome, committed=False, dest=None, next_due=None)
            continue
        try:
            planned.append(rt.moves.outcome(outcome, now))
        except Exception as error:  # no enabled edge, a due date out of range, ...
            replacement = unstorable(rt, outcome, repr(error))
            try:
                planned.append(rt.moves.outcome(replacement, now))
            except Exception:  # not even that: the lease expires and rescue counts it
                rt.telemetry.error(
                    "attempt.uncommittable", job_id=outcome.claimed.job_id, exc_info=True
                )
    moves = [p.move for p in planned]
    applied = list(zip(planned, rt.store.job_transition_many(moves), strict=True))
    refused = [p for p, ok in applied if not ok and p.move.unless_cancelled]
    if refused:  # an operator asked to cancel while these ran: cancel them instead
        applied = [(p, ok) for p, ok in applied if ok or not p.move.unless_cancelled]
        applied += _cancel_instead(rt, refused, now)
    entered = [p.move.job_id for p, ok in applied if ok and p.enters_step]
    if entered:
        report.cancelled += _cancel_pending(rt, entered, now)
    for p, ok in applied:
        report_finished(
            rt.telemetry, p.outcome, committed=ok, dest=p.dest if ok else None, next_due=p.next_due
        )
        if ok:
            report.count(p.move, p.outcome.claimed.spec.chart)
        else:
            report.fenced += 1
    return report


def unstorable(rt: Runtime, outcome: Outcome, reason: str) -> Outcome:
    """The permanent failure that replaces an outcome the engine cannot store."""
    rt.telemetry.error(
        "attempt.unstorable",
        job_id=outcome.claimed.job_id,
        kind=outcome.claimed.kind,
        outcome=outcome.trigger,
        error=reason,
    )
    failure = Failure(
        ErrorClass.UNSTORABLE, f"the attempt's outcome could not be stored: {reason}"[:2000]
    )
    return Outcome(outcome.claimed, T.FAIL_PERMANENT, failure=failure)


def _cancel_instead(
    rt: Runtime, refused: list[Planned], now: datetime
) -> list[tuple[Planned, bool]]:
    """Replace outcomes refused because a cancel was requested by the cancel itself."""
    rows = rt.store.job_get_many(p.move.job_id for p in refused)
    results: list[tuple[Planned, bool]] = []
    replacements: list[Planned] = []
    for planned in refused:
        move: Move = planned.move
        row = rows.get(move.job_id)
        held = (
            row is not None
            and row.cancel_requested_at is not None
            and (row.state, row.version, row.lease_token)
            == (move.from_state, move.version, move.lease_token)
        )
        if row is None or not held:
            results.append((planned, False))  # fenced: the lease was lost
            continue
        # No cancel from this state (a request cannot be made there; defensive): the
        # attempt's own outcome stands.
        cancel = rt.moves.cancel_held(planned.outcome, now, row)
        if cancel is None:
            rt.telemetry.error("job.uncancellable", job_id=move.job_id, state=move.from_state)
            cancel = replace(planned, move=replace(move, unless_cancelled=False))
        replacements.append(cancel)
    applied = rt.store.job_transition_many([p.move for p in replacements])
    return results + list(zip(replacements, applied, strict=True))


def _cancel_pending(rt: Runtime, job_ids: list[int], now: datetime) -> int:
    """Take a cancel requested while a step ran from the state the step led to (its
    ``on_cancel``: cancelled, or a compensation). Returns how many were cancelled."""
    moves = []
    for row in rt.store.job_get_many(job_ids).values():
        spec = rt.registry.find(row.kind)
        if spec is None or row.cancel_requested_at is None or row.finished_at is not None:
            continue
        move = rt.moves.requested_cancel(spec, row, now)
        if move is None:  # the state the step led to cannot be cancelled: the request is moot
            rt.store.job_clear_cancel(row.id)
        else:
            moves.append(move)
    done = sum(rt.store.job_transition_many(moves))
    if done:
        rt.telemetry.info("jobs.cancelled_after_step", jobs=done)
    return done


def hand_back(rt: Runtime, jobs: Iterable[Claimed], *, started: bool, now: datetime) -> TickReport:
    """Give up held jobs at once (a worker shutting down); reports what moved.

    Jobs whose handler never started are released (attempt not counted); jobs still
    running past the grace period expire now (attempt counted, due at once). Their late
    results are fenced out by the lease.
    """
    report = TickReport()
    planned = [
        (claimed, move)
        for claimed in jobs
        if (move := rt.moves.hand_back(claimed, started=started, now=now)) is not None
    ]
    applied = rt.store.job_transition_many([move for _, move in planned])
    for (claimed, move), ok in zip(planned, applied, strict=True):
        if ok:
            report.count(move, claimed.spec.chart)
            rt.telemetry.moved(
                move.event.trigger,
                job_id=claimed.job_id,
                kind=claimed.kind,
                from_state=claimed.state,
                to_state=move.values["state"],
                by="shutdown",
            )
    return report
