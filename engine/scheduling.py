"""Cron schedules and pollers on an Engine: registration (``cron``, ``poller``,
``schedule``) and the pass that turns due slots into jobs (``fire_schedules``).

``Scheduling`` is mixed into ``engine.core.Engine``. Slot arithmetic and policies are in
``engine.schedules`` (pure), the SQL in ``engine.store.schedules``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from engine.errors import RegistrationError
from engine.registry import Invariant, KeyFunction, NoPayload, Registry
from engine.retry import RetryPolicy
from engine.schedules import (
    EPOCH,
    CronTrigger,
    IntervalTrigger,
    Misfire,
    Overlap,
    Plan,
    Policy,
    Schedule,
    ScheduleRegistry,
    plan,
)
from engine.store import EventRow, FirstSeen, NewJob, ScheduleState, Store
from engine.store.schedules import ScheduleStore
from statecharts import Chart

F = TypeVar("F", bound=Callable[..., Any])

logger = structlog.get_logger("jobcharts")

CREATED = "enqueue"  # the creation event's trigger, as engine.core records it for enqueue
MIN_SLOT_KEY_TTL = timedelta(days=7)  # a slot's key outlives its job's pruning
OVERLAP_RECHECK = timedelta(seconds=1)  # how soon a slot waiting on its predecessor looks again

Payload = Mapping[str, Any] | BaseModel | None


class _Host(Protocol):
    """What the scheduling methods use of the Engine they are mixed into."""

    schedules: ScheduleRegistry
    registry: Registry
    worker_id: str

    @property
    def store(self) -> Store: ...

    def now(self) -> datetime: ...

    def job(
        self,
        fn: None = None,
        *,
        payload: type[BaseModel] | None = None,
        idempotency: KeyFunction | Invariant | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        kind: str | None = None,
        queue: str = "default",
        priority: int = 0,
        chart: Chart | None = None,
    ) -> Callable[[F], F]: ...


class Scheduling:
    """Engine methods for cron schedules and periodic pollers."""

    schedules: ScheduleRegistry  # set by Engine.__init__

    def cron(
        self: _Host,
        expr: str,
        *,
        tz: str = "UTC",
        name: str | None = None,
        misfire: Misfire = "skip",
        overlap: Overlap = "skip",
        max_catch_up: int = 10,
        grace: float | timedelta = 60.0,
        data: Payload = None,
        payload: type[BaseModel] | None = None,
        idempotency: KeyFunction | Invariant | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        kind: str | None = None,
        queue: str = "default",
        priority: int = 0,
        chart: Chart | None = None,
    ) -> Callable[[F], F]:
        """Register a handler as a job kind (like ``job``) fired at each slot of ``expr``.

        ``expr`` is a cron expression read in the wall-clock time of ``tz``. Each slot
        fires one job, whatever the number of schedulers, with payload ``data`` (validated
        against ``payload`` now). The slot is the job's dedupe key; ``idempotency`` (default
        an Invariant naming the schedule) applies to enqueues by hand. See docs/triggers.md
        for ``misfire``, ``overlap``, ``grace`` and ``max_catch_up``. A malformed expression
        or an unknown zone is refused here with croniter's or zoneinfo's reason.
        """
        trigger = CronTrigger(expr, tz)
        policy = Policy(misfire, overlap, _span(grace), max_catch_up)
        options = dict(retry=retry, timeout=timeout, queue=queue, priority=priority, chart=chart)
        return _decorator(self, trigger, policy, name, data, payload, idempotency, kind, options)

    def poller(
        self: _Host,
        every: float | timedelta,
        *,
        anchor: datetime = EPOCH,
        name: str | None = None,
        misfire: Misfire = "once",
        overlap: Overlap = "skip",
        max_catch_up: int = 10,
        grace: float | timedelta = 60.0,
        data: Payload = None,
        payload: type[BaseModel] | None = None,
        idempotency: KeyFunction | Invariant | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        kind: str | None = None,
        queue: str = "default",
        priority: int = 0,
        chart: Chart | None = None,
    ) -> Callable[[F], F]:
        """Register a handler as a job kind run every ``every`` seconds.

        Slots fall at ``anchor + k * every`` (default anchor: the Unix epoch), so a long
        run never makes the cadence drift. By default a poll is skipped while the previous
        one is unfinished, and after downtime one poll runs at once (misfire ``once``).
        Otherwise as ``cron``.
        """
        trigger = IntervalTrigger(_span(every), anchor)
        policy = Policy(misfire, overlap, _span(grace), max_catch_up)
        options = dict(retry=retry, timeout=timeout, queue=queue, priority=priority, chart=chart)
        return _decorator(self, trigger, policy, name, data, payload, idempotency, kind, options)

    def schedule(
        self: _Host,
        kind: str,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        anchor: datetime = EPOCH,
        name: str | None = None,
        misfire: Misfire | None = None,
        overlap: Overlap = "skip",
        max_catch_up: int = 10,
        grace: float | timedelta = 60.0,
        payload: Payload = None,
    ) -> Schedule:
        """Attach a schedule (``cron=`` expression or ``every=`` seconds) to a registered kind.

        ``payload`` is the payload each fired job gets (as in ``enqueue``), validated now.
        ``name`` defaults to the kind; give it when one kind has several schedules.
        ``misfire`` defaults to skip for cron and once for ``every``.
        """
        spec = self.registry.find(kind)
        if spec is None:
            known = ", ".join(self.registry.kinds) or "none"
            raise RegistrationError(
                f"cannot schedule {kind!r}: no such job kind is registered (register it "
                f"first with @engine.job; registered: {known})"
            )
        if (cron is None) == (every is None):
            raise RegistrationError(f"schedule of {kind!r}: pass exactly one of cron= or every=")
        trigger: CronTrigger | IntervalTrigger
        if cron is not None:
            trigger = CronTrigger(cron, tz)
        else:
            assert every is not None
            trigger = IntervalTrigger(_span(every), anchor)
        default: Misfire = "skip" if cron is not None else "once"
        policy = Policy(misfire or default, overlap, _span(grace), max_catch_up)
        label = name or kind
        self.schedules.check_name(label)
        schedule = Schedule(label, kind, trigger, policy, _payload(label, spec.payload, payload))
        self.schedules.add(schedule)
        return schedule

    def fire_schedules(self: _Host, now: datetime | None = None) -> int:
        """Fire the due slots of every schedule; returns how many jobs were created.

        Called by every tick (after rescue) and by the worker loop. Free when no schedule
        is registered or none can be due yet: the next due time is kept in memory.
        """
        if not self.schedules:
            return 0
        at = self.now() if now is None else now
        due = self.schedules.due(at)
        if not due:
            return 0
        table = ScheduleStore(self.store)
        states = table.states([s.name for s in due])
        fresh = [s for s in due if s.name not in states]
        if fresh:
            table.insert_first([_first_seen(s, at) for s in fresh], at)
            states.update(table.states([s.name for s in fresh]))
        return sum(_fire_one(self, table, s, states[s.name], at) for s in due)


def _decorator(
    host: _Host,
    trigger: CronTrigger | IntervalTrigger,
    policy: Policy,
    name: str | None,
    data: Payload,
    payload: type[BaseModel] | None,
    idempotency: KeyFunction | Invariant | None,
    kind: str | None,
    options: dict[str, Any],
) -> Callable[[F], F]:
    """Register the handler as a kind and attach the schedule, validating all of it first."""

    def register(handler: F) -> F:
        kind_name = kind or getattr(handler, "__name__", None)
        if not kind_name:
            raise RegistrationError("a job needs a kind: pass kind= or register a named function")
        label = name or kind_name
        host.schedules.check_name(label)
        body = _payload(label, payload or NoPayload, data)
        schedule = Schedule(label, kind_name, trigger, policy, body)
        why = idempotency or Invariant(
            f"fired by schedule {label!r}, whose slots are deduplicated by their own keys "
            f"({trigger.key_prefix}:{label}:<slot>); an enqueue by hand is not deduplicated"
        )
        host.job(kind=kind_name, payload=payload, idempotency=why, **options)(handler)
        host.schedules.add(schedule)
        return handler

    return register


def _payload(label: str, model: Any, value: Payload) -> dict[str, Any]:
    """The JSON payload every fired job gets, validated at registration, not at 3 a.m."""
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise RegistrationError(
            f"schedule {label!r}: payload must be a pydantic BaseModel subclass, got {model!r}"
        )
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        validated = model.model_validate(dict(value) if value is not None else {})
    except ValidationError as error:
        raise RegistrationError(
            f"schedule {label!r}: its payload does not validate against {model.__name__}: {error}"
        ) from error
    return validated.model_dump(mode="json")


def _span(value: float | timedelta) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RegistrationError(f"expected seconds or a timedelta, got {value!r}")
    return timedelta(seconds=value)


def _first_seen(schedule: Schedule, now: datetime) -> FirstSeen:
    """A new schedule starts from the latest slot <= now: nothing fires retroactively."""
    return FirstSeen(schedule.name, schedule.kind, schedule.spec, schedule.trigger.latest(now))


def _fire_one(
    host: _Host, table: ScheduleStore, schedule: Schedule, state: ScheduleState, now: datetime
) -> int:
    """Fire what is due for one schedule (one transaction); returns the jobs created."""
    policy = schedule.policy
    if policy.misfire == "catch_up" and policy.serial and state.previous_unfinished:
        # Its due slots wait for the unfinished job whatever they are: no plan (counting
        # a long backlog on every pass would cost more the longer the job runs).
        latest = schedule.trigger.latest(now)
        if latest is not None and (state.last_slot is None or latest > state.last_slot):
            host.schedules.note(schedule.name, now + OVERLAP_RECHECK, waiting=True)
            return 0
    planned = plan(schedule.trigger, schedule.policy, state.last_slot, now)
    if planned.fire and schedule.policy.serial and state.previous_unfinished:
        planned = planned.blocked(schedule.policy)
    if planned.advance_to is None:  # nothing to fire or advance (or waiting)
        next_check = _next_check(schedule, planned, state, now)
        host.schedules.note(schedule.name, next_check, waiting=planned.waiting)
        return 0
    results = table.advance(
        name=schedule.name,
        kind=schedule.kind,
        spec=schedule.spec,
        old=state.last_slot,
        new=planned.advance_to,
        jobs_to_fire=[_new_job(host, schedule, slot, now) for slot in planned.fire],
        now=now,
    )
    if results is None:  # another scheduler advanced it first: look again next pass
        logger.debug("schedule.raced", schedule=schedule.name)
        host.schedules.note(schedule.name, now)
        return 0
    _log(schedule, planned, results, state)
    host.schedules.note(schedule.name, _next_check(schedule, planned, state, now))
    return sum(1 for _, inserted in results if inserted)


def _next_check(
    schedule: Schedule, planned: Plan, state: ScheduleState, now: datetime
) -> datetime | None:
    """When this schedule next needs a look, after a pass that did ``planned``."""
    if planned.waiting:
        return now + OVERLAP_RECHECK
    last = planned.advance_to or state.last_slot
    return schedule.trigger.next_after(last if last is not None else now)


def _new_job(
    host: _Host, schedule: Schedule, slot: datetime, now: datetime
) -> tuple[NewJob, EventRow]:
    """The job of one slot, keyed by the slot (not by the kind's key function)."""
    spec = host.registry.get(schedule.kind)
    initial = spec.chart.initial.name
    ttl = max(MIN_SLOT_KEY_TTL, spec.key_ttl, 2 * schedule.period(slot))
    job = NewJob(
        kind=schedule.kind,
        chart=spec.chart.name,
        state=initial,
        payload=dict(schedule.payload),
        idempotency_key=schedule.key(slot),
        max_attempts=spec.first_max_attempts,
        priority=spec.priority,
        queue=spec.queue,
        due_at=now,
        correlation_id=uuid.uuid4().hex,
        created_at=now,
        key_expires_at=now + ttl,
    )
    detail = {"schedule": schedule.name, "slot": _iso(slot)}
    return job, EventRow(CREATED, None, initial, 0, now, host.worker_id, detail)


def _log(
    schedule: Schedule, planned: Plan, results: list[tuple[int, bool]], state: ScheduleState
) -> None:
    """schedule.fired per slot fired; schedule.skipped for late and overlapped slots."""
    if planned.missed is not None:
        logger.warning(
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
        logger.info(
            "schedule.skipped",
            schedule=schedule.name,
            kind=schedule.kind,
            reason="overlap",
            slot=_iso(slot),
            job_id=state.last_job_id,
        )
    for slot, (job_id, inserted) in zip(planned.fire, results, strict=True):
        logger.info(
            "schedule.fired",
            schedule=schedule.name,
            kind=schedule.kind,
            slot=_iso(slot),
            job_id=job_id,
            deduplicated=not inserted,
        )


def _iso(slot: datetime) -> str:
    return slot.astimezone(UTC).isoformat()
