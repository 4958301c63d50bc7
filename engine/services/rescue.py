"""Rescue: hand on jobs whose lease expired (their worker crashed, hung or lost the database).

A claim whose handler never started is released: back to pending, its attempt not counted.
A started attempt expires: it may have run, so it counts (retry after the backoff, or
quarantine when attempts are exhausted). A job asked to cancel is cancelled instead. A job
no transition can rescue is parked for an operator: its lease end is cleared, so no later
rescue meets it again, and its last error says why. A job in a state a deploy removed is
migrated as its chart declares, or parked and reported stranded (engine.strays).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from engine.moves import facts
from engine.outcomes import ErrorClass, Failure
from engine.report import TickReport
from engine.runtime import Runtime
from engine.store import JobRow, Move
from engine.strays import judge
from statecharts import ChartError, T


@dataclass(frozen=True)
class RescueConfig:
    batch_size: int | None = None  # expired leases handled per pass (None: the engine's)


class Rescuer:
    """Rescues expired leases, a batch at a time."""

    def __init__(self, rt: Runtime, config: RescueConfig) -> None:
        self.rt = rt
        self.config = config

    def run_once(
        self, now: datetime, *, limit: int | None = None, exclude: Sequence[int] = ()
    ) -> TickReport:
        """One pass. ``exclude``: jobs the caller itself holds (a worker renews those
        rather than rescuing itself)."""
        rt = self.rt
        report = TickReport()
        parked: list[tuple[JobRow, str]] = []

        def plan(row: JobRow, _tx_time: datetime | None) -> Move | None:
            spec = rt.registry.find(row.kind)
            if spec is None:
                return None
            if row.state not in spec.state_names:  # a deploy removed its state meanwhile
                verdict = judge(rt.moves, spec, row, now)
                if verdict is not None and verdict.move is not None:
                    return verdict.move
                parked.append((row, verdict.why if verdict else f"state {row.state!r}"))
                return None
            never_started = row.started_at is None
            trigger = T.RELEASE if never_started else T.EXPIRE
            guards = facts(row, now)
            try:
                if row.cancel_requested_at is not None and spec.compiled.fire(
                    row.state, T.CANCEL, guards
                ):
                    trigger = T.CANCEL  # asked to stop while it ran: don't run it again
                transition = spec.compiled.fire(row.state, trigger, guards)
            except ChartError as error:  # a state its chart no longer has
                transition, problem = None, str(error)
            else:
                problem = f"chart {spec.chart.name!r} has no {trigger} from {row.state!r}"
            if transition is None:
                parked.append((row, problem))
                return None
            lease_end = _iso(row.lease_expires_at)
            failure = None
            if trigger == T.EXPIRE:
                failure = Failure(
                    ErrorClass.LEASE_EXPIRED,
                    f"attempt {row.attempt}'s lease expired at {lease_end} while its handler"
                    " may have been running (the worker crashed, was killed, hung, or lost the"
                    " database)",
                )
            detail = {"lease_expired_at": lease_end}
            return rt.moves.from_row(spec, row, transition, now, failure=failure, detail=detail)

        rescued = rt.store.job_rescue_expired(
            now=now,
            limit=limit or self.config.batch_size or rt.batch_size,
            kinds=rt.registry.kinds,
            plan=plan,
            exclude=list(exclude),
        )
        for row, move in rescued:
            rt.telemetry.warning(
                "job.rescued",
                job_id=row.id,
                kind=row.kind,
                attempt=row.attempt,
                trigger=move.event.trigger,
                from_state=row.state,
                state=move.values["state"],
                lease_expired_at=_iso(row.lease_expires_at),
            )
            report.count(move, rt.registry.get(row.kind).chart)
        for row, problem in parked:
            message = f"no transition can rescue this job; left for an operator: {problem}"
            if rt.store.job_park(row, ErrorClass.UNRESCUABLE, message):
                rt.telemetry.error("job.unrescuable", job_id=row.id, kind=row.kind, error=problem)
        return report


def _iso(when: datetime | None) -> str:
    return when.isoformat() if when is not None else "(unknown)"
