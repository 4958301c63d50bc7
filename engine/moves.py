"""The one place a trigger becomes a Move: the facts a chart's guards read, the column
values its effects write (``columns``), the event row, and the cancel rule.

A Move is a compare-and-set the store applies only if the job is still as it was read;
every verb (claim, commit, rescue, hand back, operators) gets its Moves from here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from engine.columns import Columns, transition_columns
from engine.outcomes import Claimed, ErrorClass, Failure, Outcome, QuarantineReason
from engine.registry import JobSpec
from engine.retry import RetryPolicy
from engine.store import EventRow, JobRow, Move
from statecharts import ChartError, CompiledChart, Effect, Facts, S, T, Transition
from statecharts.chart import Migration
from statecharts.paths import MIGRATE as MIGRATE  # out of a state a new version lacks

QUARANTINED = str(S.QUARANTINED)

CREATED = "enqueue"  # the trigger recorded for a job's creation event
SET_ASIDE = "set_aside"  # a row its chart cannot take, quarantined with the reason
RETRYING = (Effect.SCHEDULE_RETRY, Effect.SCHEDULE_POLL)  # outcomes that stay for another go


@dataclass(frozen=True)
class Planned:
    """An attempt's outcome as the Move that commits it, and what it leads to."""

    move: Move
    outcome: Outcome
    next_due: datetime | None
    enters_step: bool  # a pending cancel is taken from the step it enters

    @property
    def dest(self) -> str:
        return str(self.move.values["state"])


def facts(row: JobRow, now: datetime) -> Facts:
    """What a job row tells its chart's guards at ``now``."""
    return Facts(row.attempt, row.max_attempts, now=now, due_at=row.due_at, deadline=row.deadline)


def deadline_failure(state: str, deadline: datetime | None) -> Failure:
    when = deadline.isoformat() if deadline else "(unknown)"
    return Failure(
        ErrorClass.DEADLINE_PASSED,
        f"state {state!r} reached its deadline {when}",
        reason=QuarantineReason.DEADLINE,
    )


class Identity(Protocol):
    """Whose moves these are: the engine's retry jitter and worker id, read at each move
    (an app may set either after building the engine)."""

    rng: random.Random
    worker_id: str


class Moves:
    """Builds every Move of one engine."""

    def __init__(self, identity: Identity) -> None:
        self._identity = identity

    @property
    def rng(self) -> random.Random:
        return self._identity.rng

    @property
    def worker_id(self) -> str:
        return self._identity.worker_id

    def columns(
        self,
        spec: JobSpec | None,
        transition: Transition,
        source: str,
        *,
        now: datetime,
        attempt: int,
        deadline: datetime | None,
        **kw: Any,
    ) -> Columns:
        """The columns ``transition`` writes, with the retry policy, timers and budgets of
        ``spec``'s states (the default policy for a kind no app registers)."""
        if spec is None:
            return transition_columns(
                transition, now=now, attempt=attempt, retry=RetryPolicy(), rng=self.rng, **kw
            )
        entry = None
        if Effect.ENTER_STEP in transition.effects:
            entry = spec.entry(transition.dest)
        elif Effect.RESET_ATTEMPTS in transition.effects:
            entry = spec.entry(spec.first_step)
        columns = transition_columns(
            transition,
            now=now,
            attempt=attempt,
            retry=spec.retry_for(source),
            rng=self.rng,
            entry=entry,
            deadline=deadline,
            every=spec.chart.state(source).every,
            **kw,
        )
        if transition.trigger == T.CANCEL:
            columns.values["cancel_requested_at"] = None  # the request is honoured
        return columns

    def from_row(
        self,
        spec: JobSpec | None,
        row: JobRow,
        transition: Transition,
        now: datetime,
        *,
        failure: Failure | None = None,
        detail: dict[str, Any] | None = None,
        **kw: Any,
    ) -> Move:
        """The compare-and-set taking ``transition`` from the job as ``row`` read it."""
        columns = self.columns(
            spec,
            transition,
            row.state,
            now=now,
            attempt=row.attempt,
            deadline=row.deadline,
            failure=failure,
            **kw,
        )
        event = EventRow(
            transition.trigger,
            row.state,
            transition.dest,
            row.attempt,
            now,
            self.worker_id,
            {**(columns.detail or {}), **(detail or {}), **_adopt(spec, row, columns)} or None,
        )
        return _requested_by(
            Move(row.id, row.state, row.version, row.lease_token, columns.values, event), row
        )

    def migrate(self, spec: JobSpec, row: JobRow, migration: Migration, now: datetime) -> Move:
        """Move a job out of a state its chart version no longer has, as ``migration`` says:
        it enters the new state as a step is entered (due now, or at its timer), or ends
        there (``quarantined`` holds it for an operator)."""
        dest = spec.chart.state(migration.new)
        effects: tuple[Effect, ...]
        if dest.is_final:
            effects = (Effect.RELEASE_LEASE, Effect.RECORD_ERROR, Effect.QUARANTINE, Effect.FINISH)
            if dest.name != QUARANTINED:
                effects = (Effect.RELEASE_LEASE, Effect.FINISH)
        else:
            effects = (Effect.RELEASE_LEASE, Effect.ENTER_STEP)
        transition = Transition(MIGRATE, (row.state,), dest.name, (), effects)
        entry = spec.entry(dest.name)
        if dest.name not in spec.steps:  # a timer state: its own timers, the kind's budget
            entry = replace(entry, max_attempts=spec.first_max_attempts)
        was = f"chart {spec.chart.name!r} version {row.chart_version or '(unrecorded)'}"
        failure = Failure(
            ErrorClass.MIGRATED,
            f"{was} had state {row.state!r}; version {spec.version} moves its jobs to "
            f"{dest.name!r}" + (f": {migration.note}" if migration.note else ""),
            reason=QuarantineReason.MIGRATED,
        )
        columns = transition_columns(
            transition,
            now=now,
            attempt=row.attempt,
            retry=spec.retry,
            rng=self.rng,
            entry=entry,
            failure=failure,
        )
        columns.values["chart_version"] = spec.version
        if migration.keep_due and not dest.is_final:
            columns.values.update(due_at=row.due_at or now, deadline=row.deadline)
        detail: dict[str, Any] = {"chart_version": [row.chart_version, spec.version]}
        if migration.note:
            detail["note"] = migration.note
        event = EventRow(MIGRATE, row.state, dest.name, row.attempt, now, self.worker_id, detail)
        return Move(row.id, row.state, row.version, row.lease_token, columns.values, event)

    def set_aside(self, spec: JobSpec, row: JobRow, failure: Failure, now: datetime) -> Move | None:
        """Quarantine a row its chart cannot take (``failure`` says why), from wherever it
        is; None when the chart has no ``quarantined`` state to hold it."""
        if not spec.chart.has_state(QUARANTINED):
            return None
        effects = (Effect.RELEASE_LEASE, Effect.RECORD_ERROR, Effect.QUARANTINE, Effect.FINISH)
        transition = Transition(SET_ASIDE, (row.state,), QUARANTINED, (), effects)
        columns = transition_columns(
            transition, now=now, attempt=0, retry=spec.retry, rng=self.rng, failure=failure
        )
        columns.values["chart_version"] = spec.version
        event = EventRow(
            SET_ASIDE,
            row.state,
            QUARANTINED,
            row.attempt if isinstance(row.attempt, int) else 0,
            now,
            self.worker_id,
            {**(columns.detail or {}), **_adopt(spec, row, columns)},
        )
        return Move(row.id, row.state, row.version, row.lease_token, columns.values, event)

    def off_chart(
        self, spec: JobSpec, row: JobRow, transition: Transition, now: datetime, *, why: str
    ) -> Move:
        """An operator's cancel or requeue from a state the chart does not have: its
        columns owe nothing to that state; the event says it was taken off the chart."""
        entry = spec.entry(spec.first_step) if Effect.RESET_ATTEMPTS in transition.effects else None
        columns = transition_columns(
            transition, now=now, attempt=row.attempt, retry=spec.retry, rng=self.rng, entry=entry
        )
        if transition.trigger == T.CANCEL:
            columns.values["cancel_requested_at"] = None
        detail = {"by": "operator", "off_chart": why, **_adopt(spec, row, columns)}
        event = EventRow(
            transition.trigger, row.state, transition.dest, row.attempt, now, self.worker_id, detail
        )
        return Move(row.id, row.state, row.version, row.lease_token, columns.values, event)

    def start(
        self,
        spec: JobSpec,
        row: JobRow,
        transition: Transition,
        *,
        leased_at: datetime,
        lease_seconds: float,
        token: str,
        now: datetime,
        started: bool = False,
    ) -> Move:
        """The claim of a due job: a new attempt under lease ``token`` from ``leased_at``;
        ``started``: its handler starts as the claim commits (the worker hands each claimed
        job to a free handler thread at once), so the claim also records the start."""
        columns = self.columns(
            spec,
            transition,
            row.state,
            now=leased_at,
            attempt=row.attempt,
            deadline=row.deadline,
            timeout=lease_seconds,
            lease_token=token,
        )
        if started:
            columns.values["started_at"] = leased_at
        attempt = int(columns.values["attempt"])
        adopted = _adopt(spec, row, columns) if row.chart_version != spec.version else None
        event = EventRow(T.START, row.state, transition.dest, attempt, now, self.worker_id, adopted)
        return Move(row.id, row.state, row.version, row.lease_token, columns.values, event)

    def timer(self, spec: JobSpec, row: JobRow, trigger: str, now: datetime) -> Move | None:
        """A transition the tick fires itself (no handler, no lease), or None if not enabled."""
        transition = spec.compiled.fire(row.state, trigger, facts(row, now))
        if transition is None:
            return None
        failure = deadline_failure(row.state, row.deadline) if trigger == T.DEADLINE else None
        return self.from_row(spec, row, transition, now, failure=failure)

    def requested_cancel(self, spec: JobSpec, row: JobRow, now: datetime) -> Move | None:
        """The cancel rule for a job no handler holds: a pending request is taken from the
        state the job is in now (to ``cancelled``, or a compensating step), if it can be."""
        if row.cancel_requested_at is None or row.finished_at is not None:
            return None
        return self.timer(spec, row, T.CANCEL, now)

    def outcome(self, outcome: Outcome, now: datetime) -> Planned:
        """The Move committing an attempt's outcome (ChartError if its chart has no edge)."""
        claimed = outcome.claimed
        spec = claimed.spec
        failure = outcome.failure
        guards = Facts(
            claimed.attempt,
            claimed.max_attempts,
            now=now,
            deadline=claimed.deadline,
            error_class=failure.error_class if failure else None,
        )
        transition = spec.compiled.require(claimed.state, outcome.trigger, guards)
        if outcome.trigger == T.WAIT and transition.dest != claimed.state and failure is None:
            failure = deadline_failure(claimed.state, claimed.deadline)  # "not yet", late
        columns, move = self._held(
            claimed,
            transition,
            now,
            failure=failure,
            result=outcome.result,
            # A retry (or "check again later") gives way to a cancel requested meanwhile;
            # an outcome that leaves the step stands (its work happened), and a request
            # still pending is then taken from the state it leads to (commit).
            unless_cancelled=any(e in transition.effects for e in RETRYING),
        )
        enters = Effect.ENTER_STEP in transition.effects
        return Planned(move, outcome, columns.next_due_at, enters)

    def cancel_held(self, outcome: Outcome, now: datetime, row: JobRow) -> Planned | None:
        """The cancel of a job a handler holds, honouring the request ``row`` (the job as
        read) holds, or None when its chart has no cancel there."""
        try:
            cancel = Outcome(outcome.claimed, T.CANCEL, duration=outcome.duration)
            planned = self.outcome(cancel, now)
        except ChartError:
            return None
        move = _requested_by(replace(planned.move, unless_cancelled=False), row)
        return replace(planned, move=move)

    def hand_back(self, claimed: Claimed, *, started: bool, now: datetime) -> Move | None:
        """A stopping worker gives a held job back: release it if its handler never started,
        else expire the attempt (counted, due at once)."""
        trigger = T.EXPIRE if started else T.RELEASE
        guards = Facts(claimed.attempt, claimed.max_attempts, now=now, deadline=claimed.deadline)
        transition = claimed.spec.compiled.fire(claimed.state, trigger, guards)
        if transition is None:
            return None
        failure = (
            Failure(ErrorClass.WORKER_SHUTDOWN, "the worker shut down while the handler ran")
            if started
            else None
        )
        _, move = self._held(
            claimed, transition, now, failure=failure, retry_now=True, detail={"by": "shutdown"}
        )
        return move

    def _held(
        self,
        claimed: Claimed,
        transition: Transition,
        now: datetime,
        *,
        detail: dict[str, Any] | None = None,
        unless_cancelled: bool = False,
        **kw: Any,
    ) -> tuple[Columns, Move]:
        """The compare-and-set taking ``transition`` from a job this worker holds."""
        columns = self.columns(
            claimed.spec,
            transition,
            claimed.state,
            now=now,
            attempt=claimed.attempt,
            deadline=claimed.deadline,
            **kw,
        )
        event = EventRow(
            transition.trigger,
            claimed.state,
            transition.dest,
            claimed.attempt,
            now,
            self.worker_id,
            {**(columns.detail or {}), **(detail or {})} or None,
        )
        move = Move(
            claimed.job_id,
            claimed.state,
            claimed.version,
            claimed.lease_token,
            columns.values,
            event,
            unless_cancelled=unless_cancelled,
        )
        return columns, move


def _adopt(spec: JobSpec | None, row: JobRow, columns: Columns) -> dict[str, Any]:
    """A job moved under another version of its chart than its last move takes this one
    (the new version is written, and the switch recorded in the event's detail, so each
    part of its history is checked against the version it ran under)."""
    if spec is None or row.chart_version == spec.version:
        return {}
    columns.values["chart_version"] = spec.version
    return {"chart_version": [row.chart_version, spec.version]}


def cancel_enabled(compiled: CompiledChart, row: JobRow, now: datetime) -> bool:
    """Whether the job's chart can take a cancel from the state it is in."""
    return compiled.fire(row.state, T.CANCEL, facts(row, now)) is not None


def _requested_by(move: Move, row: JobRow) -> Move:
    """A cancel honouring ``row``'s pending request, its event naming who asked (when the
    request was named: the dashboard's operators)."""
    if move.event.trigger != T.CANCEL or not (row.cancel_requested_at and row.cancel_requested_by):
        return move
    detail = {**(move.event.detail or {}), "requested_by": row.cancel_requested_by}
    return replace(move, event=replace(move.event, detail=detail))
