"""Schedules: turn the due slots of cron schedules and pollers into jobs, exactly once.

Each pass reads the stored state of the due schedules, plans what to fire with
``engine.timetable.plan`` (misfire and overlap policies), and advances each schedule's last
slot by compare-and-set in the same transaction as the jobs it fires, so however many
schedulers run, a slot fires once. The next due time is kept in memory, so a pass is free
while nothing can be due.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from engine.enqueue import new_job
from engine.runtime import Runtime
from engine.store import FirstSeen, NewJob, ScheduleState
from engine.store.encode import dumps
from engine.store.schedules import ScheduleStore
from engine.timetable import Plan, Schedule, ScheduleRegistry, plan

MIN_SLOT_KEY_TTL = timedelta(days=7)  # a slot's key outlives its job's pruning
OVERLAP_RECHECK = timedelta(seconds=1)  # how soon a slot waiting on its predecessor looks again


@dataclass(frozen=True)
class SchedulerConfig:
    min_slot_key_ttl: timedelta = MIN_SLOT_KEY_TTL
    overlap_recheck: timedelta = OVERLAP_RECHECK


class Scheduler:
    """Fires the due slots of an engine's schedules."""

    def __init__(
        self, rt: Runtime, schedules: ScheduleRegistry, config: SchedulerConfig | None = None
    ) -> None:
        self.rt = rt
        self.schedules = schedules
        self.config = config or SchedulerConfig()

    def run_once(self, now: datetime) -> int:
        """Fire the due slots of every schedule; returns how many jobs were created."""
        if not self.schedules:
            return 0
        due = self.schedules.due(now)
        if not due:
            return 0
        table = ScheduleStore(self.rt.store)
        states = table.states([s.name for s in due])
        fresh = [s for s in due if s.name not in states]
        if fresh:
            table.insert_first([_first_seen(s, now) for s in fresh], now)
            states.update(table.states([s.name for s in fresh]))
        return sum(self._fire_one(table, s, states[s.name], now) for s in due)

    def _fire_one(
        self, table: ScheduleStore, schedule: Schedule, state: ScheduleState, now: datetime
    ) -> int:
        """Fire what is due for one schedule (one transaction); returns the jobs created."""
        policy = schedule.policy
        if policy.misfire == "catch_up" and policy.serial and state.previous_unfinished:
            # Its due slots wait for the unfinished job whatever they are: no plan (counting
            # a long backlog on every pass would cost more the longer the job runs).
            latest = schedule.trigger.latest(now)
            if latest is not None and (state.last_slot is None or latest > state.last_slot):
                self.schedules.note(schedule.name, now + self.config.overlap_recheck, waiting=True)
                return 0
        planned = plan(schedule.trigger, schedule.policy, state.last_slot, now)
        if planned.fire and schedule.policy.serial and state.previous_unfinished:
            planned = planned.blocked(schedule.policy)
        if planned.advance_to is None:  # nothing to fire or advance (or waiting)
            next_check = self._next_check(schedule, planned, state, now)
            self.schedules.note(schedule.name, next_check, waiting=planned.waiting)
            return 0
        results = table.advance(
            name=schedule.name,
            kind=schedule.kind,
            spec=schedule.spec,
            old=state.last_slot,
            new=planned.advance_to,
            jobs_to_fire=[self._new_job(schedule, slot, now) for slot in planned.fire],
            now=now,
        )
        if results is None:  # another scheduler advanced it first: look again next pass
            self.rt.telemetry.emit("schedule.raced", "debug", schedule=schedule.name)
            self.schedules.note(schedule.name, now)
            return 0
        self._report(schedule, planned, results, state)
        self.schedules.note(schedule.name, self._next_check(schedule, planned, state, now))
        return sum(1 for _, inserted in results if inserted)

    def _new_job(self, schedule: Schedule, slot: datetime, now: datetime) -> NewJob:
        """The job of one slot, keyed by the slot (not by the kind's key function)."""
        spec = self.rt.registry.get(schedule.kind)
        ttl = max(self.config.min_slot_key_ttl, spec.key_ttl, 2 * schedule.period(slot))
        return new_job(
            spec,
            dumps(dict(schedule.payload)),
            key=schedule.key(slot),
            key_ttl=ttl,
            due_at=now,
            worker_id=self.rt.worker_id,
            detail={"schedule": schedule.name, "slot": _iso(slot)},
        )

    def _next_check(
        self, schedule: Schedule, planned: Plan, state: ScheduleState, now: datetime
    ) -> datetime | None:
        """When this schedule next needs a look, after a pass that did ``planned``."""
        if planned.waiting:
            return now + self.config.overlap_recheck
        last = planned.advance_to or state.last_slot
        return schedule.trigger.next_after(last if last is not None else now)

    def _report(
        self,
        schedule: Schedule,
        planned: Plan,
        results: list[tuple[int, bool]],
        state: ScheduleState,
    ) -> None:
        """schedule.fired per slot fired; schedule.skipped for late and overlapped slots."""
        if planned.missed is not None:
            self.rt.telemetry.warning(
                "schedule.skipped",
                schedule=schedule.name,
                kind=schedule.kind,
                reason="misfire",
                policy=schedule.policy.misfire,
                slot=_iso(planned.missed.last),
                first_slot=_iso(planned.missed.first),
                count=planned.missed.count,
            )
        for slot in planned.overlapped:
            self.rt.telemetry.info(
                "schedule.skipped",
                schedule=schedule.name,
                kind=schedule.kind,
                reason="overlap",
                slot=_iso(slot),
                job_id=state.last_job_id,
            )
        for slot, (job_id, inserted) in zip(planned.fire, results, strict=True):
            self.rt.telemetry.info(
                "schedule.fired",
                schedule=schedule.name,
                kind=schedule.kind,
                slot=_iso(slot),
                job_id=job_id,
                deduplicated=not inserted,
            )


def _first_seen(schedule: Schedule, now: datetime) -> FirstSeen:
    """A new schedule starts from the latest slot <= now: nothing fires retroactively."""
    return FirstSeen(schedule.name, schedule.kind, schedule.spec, schedule.trigger.latest(now))


def _iso(slot: datetime) -> str:
    return slot.astimezone(UTC).isoformat()
