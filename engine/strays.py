"""Rows the running chart cannot take as they are: never claimed blindly, never ignored.

A job is a stray when its state is not one of its chart's (a deploy renamed or removed it,
or someone edited the row), a timestamp no longer reads back, it waits with no due time,
or it has made more attempts than its budget. ``judge`` says what happens to it:

- **migrate**: its chart declares where jobs of that old state go (``Migration``);
- **set aside**: quarantined with the reason (``unknown_state``, ``corrupt_row``,
  ``attempts_exceeded``) when no deploy can fix it: the row itself is wrong;
- **stranded**: its state belongs to another version of the chart, which declares no
  destination for it. Left exactly as it is (a rollback, or a new deploy declaring the
  migration, picks it up again) and reported by every worker every minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from engine.events import Telemetry
from engine.moves import MIGRATE, SET_ASIDE, Moves
from engine.outcomes import ErrorClass, Failure, QuarantineReason
from engine.registry import JobSpec
from engine.store import JobRow, Move
from engine.store.rows import CorruptTime, corrupt_columns

Action = Literal["migrate", "set_aside", "stranded"]


@dataclass(frozen=True)
class Verdict:
    """What to do with one stray row, and why in words (``move`` None: leave it)."""

    action: Action
    why: str
    move: Move | None = None
    dest: str | None = None


def is_stray(spec: JobSpec, row: JobRow) -> bool:
    """Cheap test for the claim: can this due row not be taken as it is?"""
    if row.state not in spec.state_names:
        return True
    if row.attempt >= row.max_attempts and row.state in spec.start_states:
        return True
    return isinstance(row.due_at, CorruptTime) or isinstance(row.deadline, CorruptTime)


def judge(moves: Moves, spec: JobSpec, row: JobRow, now: datetime) -> Verdict | None:
    """The verdict on ``row`` (unfinished, held by no live lease), or None when it is fine."""
    chart = spec.chart
    corrupt = [c for c in corrupt_columns(row) if c != "payload"]  # a payload quarantines
    if corrupt:  # at its attempt, with its validation error
        values = ", ".join(f"{c}={getattr(row, c).raw!r}" for c in corrupt)
        return _aside(
            moves,
            spec,
            row,
            now,
            ErrorClass.CORRUPT_ROW,
            QuarantineReason.CORRUPT_ROW,
            f"column(s) that no longer read back as timestamps: {values}",
        )
    if row.state not in spec.state_names:
        migration = chart.migration_for(row.state)
        if migration is not None:
            move = moves.migrate(spec, row, migration, now)
            why = f"chart {chart.name!r} version {spec.version} migrates {row.state!r} -> "
            return Verdict("migrate", why + repr(migration.new), move, migration.new)
        if row.chart_version == spec.version:
            return _aside(
                moves,
                spec,
                row,
                now,
                ErrorClass.UNKNOWN_STATE,
                QuarantineReason.UNKNOWN_STATE,
                f"state {row.state!r} is not a state of chart {chart.name!r} version "
                f"{spec.version}, the version the row claims (it was edited by hand?)",
            )
        return Verdict(
            "stranded",
            f"state {row.state!r} (chart version {row.chart_version or 'unrecorded'}) is not "
            f"in version {spec.version} of chart {chart.name!r}, which declares no migration "
            f"for it: declare Migration({row.state!r}, <new state>) or roll back",
        )
    if row.state in spec.start_states and row.attempt >= row.max_attempts:
        return _aside(
            moves,
            spec,
            row,
            now,
            ErrorClass.ATTEMPTS_EXCEEDED,
            QuarantineReason.ATTEMPTS_EXCEEDED,
            f"the row has made {row.attempt} attempts of its budget of {row.max_attempts}; "
            "another would exceed the bound",
        )
    if row.due_at is None and row.lease_expires_at is None and not chart.state(row.state).is_final:
        return _aside(
            moves,
            spec,
            row,
            now,
            ErrorClass.CORRUPT_ROW,
            QuarantineReason.CORRUPT_ROW,
            f"it waits in {row.state!r} with no due time and no lease: nothing would ever take it",
        )
    return None


def _aside(
    moves: Moves,
    spec: JobSpec,
    row: JobRow,
    now: datetime,
    error: ErrorClass,
    reason: QuarantineReason,
    message: str,
) -> Verdict:
    failure = Failure(error, message, reason=reason)
    move = moves.set_aside(spec, row, failure, now)
    if move is None:
        return Verdict("stranded", f"{message}; its chart has no quarantined state to hold it")
    return Verdict("set_aside", f"{reason}: {message}", move, move.values["state"])


def report_move(telemetry: Telemetry, row: JobRow, move: Move) -> None:
    """Say what a move taken without a handler did (a timer, a cancel, a migration, a row
    set aside): ``job.<trigger>``; a set-aside row is an error an operator must see."""
    trigger = move.event.trigger
    extra: dict[str, object] = {}
    if trigger in (MIGRATE, SET_ASIDE):
        extra = {
            "chart_version": move.values.get("chart_version"),
            "reason": move.values.get("quarantine_reason"),
            "why": move.values.get("last_error_message"),
        }
    telemetry.moved(
        trigger,
        job_id=row.id,
        kind=row.kind,
        from_state=row.state,
        to_state=move.values["state"],
        level="error" if trigger == SET_ASIDE else "warning" if trigger == MIGRATE else "info",
        **{k: v for k, v in extra.items() if v is not None},
    )
