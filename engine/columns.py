"""Turn a chart transition's declared effects into the column values written with it.

A pure function of (transition, the job's facts, now, the outcome): the same inputs always
give the same row, which is what makes a state change a safe compare-and-set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.outcomes import Failure, QuarantineReason
from engine.registry import Entry
from engine.retry import RetryPolicy
from statecharts import Effect, Transition

MESSAGE_LIMIT = 2_000
TRACEBACK_LIMIT = 8_000
DETAIL_MESSAGE_LIMIT = 300


@dataclass(frozen=True)
class Columns:
    """The column values of one transition and the detail kept in its event row."""

    values: dict[str, Any]
    detail: dict[str, Any] | None
    next_due_at: datetime | None


def truncate_tail(text: str, limit: int) -> str:
    """Keep the end of ``text`` (the innermost frames of a traceback matter most)."""
    if len(text) <= limit:
        return text
    return "...[truncated]...\n" + text[-limit:]


def _until_deadline(due: datetime, deadline: datetime | None) -> datetime:
    """A state's deadline bounds every wait in it: the job is due again by then at the latest."""
    return due if deadline is None or due <= deadline else deadline


def transition_columns(
    transition: Transition,
    *,
    now: datetime,
    attempt: int,
    retry: RetryPolicy,
    rng: random.Random,
    timeout: float = 0.0,
    lease_token: str | None = None,
    retry_now: bool = False,
    failure: Failure | None = None,
    result: Any = None,
    entry: Entry | None = None,
    deadline: datetime | None = None,
    every: float | None = None,
) -> Columns:
    """Column values for taking ``transition`` at ``now`` from a job at ``attempt``.

    ``timeout`` is the lease length granted by START_ATTEMPT; ``retry_now`` makes
    SCHEDULE_RETRY due at once (a worker shutting down hands its jobs on immediately).
    ``entry``: what the destination state sets when entered (ENTER_STEP) or what the first
    step sets (RESET_ATTEMPTS). ``deadline`` and ``every``: the source state's persisted
    deadline and polling interval; no retry or check is ever due after the deadline.
    """
    values: dict[str, Any] = {"state": transition.dest, "updated_at": now}
    detail: dict[str, Any] = {}
    next_due: datetime | None = None
    effects = transition.effects
    if Effect.START_ATTEMPT in effects:
        attempt += 1
        values.update(
            attempt=attempt,
            due_at=None,
            lease_token=lease_token,
            lease_expires_at=now + timedelta(seconds=timeout),
            started_at=None,
        )
    if Effect.RELEASE_LEASE in effects:
        values.update(lease_token=None, lease_expires_at=None)
    if Effect.RECORD_ERROR in effects and failure is not None:
        values.update(
            last_error_class=failure.error_class[:200],
            last_error_message=failure.message[:MESSAGE_LIMIT],
            last_error_traceback=truncate_tail(failure.traceback, TRACEBACK_LIMIT),
        )
        detail.update(error=failure.error_class, message=failure.message[:DETAIL_MESSAGE_LIMIT])
    if Effect.SCHEDULE_RETRY in effects:
        wait = 0.0 if retry_now else retry.delay(attempt, rng)
        next_due = _until_deadline(now + timedelta(seconds=wait), deadline)
        values["due_at"] = next_due
        detail["retry_in"] = round((next_due - now).total_seconds(), 6)
    if Effect.SCHEDULE_POLL in effects:
        next_due = _until_deadline(now + timedelta(seconds=every or 0.0), deadline)
        values.update(attempt=0, due_at=next_due)
        attempt = 0
        detail["next_check"] = next_due.isoformat()
    if Effect.ENTER_STEP in effects:
        step = entry or Entry(max_attempts=1)
        wait = step.every or step.delay or 0.0
        entered_deadline = now + timedelta(seconds=step.deadline) if step.deadline else None
        next_due = _until_deadline(now + timedelta(seconds=wait), entered_deadline)
        values.update(
            attempt=0,
            max_attempts=step.max_attempts,
            due_at=next_due,
            started_at=None,
            deadline=entered_deadline,
        )
        attempt = 0
    if Effect.QUARANTINE in effects:
        reason = (failure.reason if failure else None) or QuarantineReason.EXHAUSTED
        values["quarantine_reason"] = str(reason)
        detail["reason"] = str(reason)
    if Effect.UNDO_ATTEMPT in effects:
        attempt = max(attempt - 1, 0)
        values.update(attempt=attempt, due_at=now, started_at=None)
    if Effect.RESET_ATTEMPTS in effects:
        values.update(
            attempt=0,
            due_at=now,
            quarantine_reason=None,
            finished_at=None,
            deadline=None,
            cancel_requested_at=None,
        )
        if entry is not None:
            values["max_attempts"] = entry.max_attempts
        attempt = 0
    if Effect.FINISH in effects:
        values.update(finished_at=now, due_at=None, deadline=None, cancel_requested_at=None)
    if result is not None:
        values["result"] = result
    return Columns(values, detail or None, next_due)
