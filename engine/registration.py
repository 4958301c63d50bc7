"""Registering scheduled kinds: a handler fired by a cron expression or an interval, and
a schedule attached to a kind registered already. Payloads and policies are checked here,
at registration, not when the first slot fires at 3 a.m."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from engine.errors import RegistrationError
from engine.registry import Invariant, JobOptions, NoPayload, Registry
from engine.timetable import (
    CronTrigger,
    IntervalTrigger,
    Misfire,
    Overlap,
    Policy,
    Schedule,
    ScheduleRegistry,
)

F = TypeVar("F", bound=Callable[..., Any])
Payload = Mapping[str, Any] | BaseModel | None


def scheduled_kind(
    registry: Registry,
    schedules: ScheduleRegistry,
    trigger: CronTrigger | IntervalTrigger,
    policy: Policy,
    *,
    name: str | None,
    data: Payload,
    options: JobOptions,
) -> Callable[[F], F]:
    """A decorator registering the handler as a kind, with ``trigger``'s schedule attached."""

    def register(handler: F) -> F:
        kind_name = options.get("kind") or getattr(handler, "__name__", None)
        if not kind_name:
            raise RegistrationError("a job needs a kind: pass kind= or register a named function")
        label = name or kind_name
        schedules.check_name(label)
        body = schedule_payload(label, options.get("payload") or NoPayload, data)
        schedule = Schedule(label, kind_name, trigger, policy, body)
        why = options.get("idempotency") or Invariant(
            f"fired by schedule {label!r}, whose slots are deduplicated by their own keys "
            f"({trigger.key_prefix}:{label}:<slot>); an enqueue by hand is not deduplicated"
        )
        registry.add(handler, {**options, "kind": kind_name, "idempotency": why})
        schedules.add(schedule)
        return handler

    return register


def attach_schedule(
    registry: Registry,
    schedules: ScheduleRegistry,
    kind: str,
    *,
    cron: str | None,
    every: float | timedelta | None,
    tz: str,
    anchor: datetime,
    name: str | None,
    misfire: Misfire | None,
    overlap: Overlap,
    max_catch_up: int,
    grace: float | timedelta,
    payload: Payload,
) -> Schedule:
    """Attach a cron or interval schedule to the registered ``kind``."""
    spec = registry.find(kind)
    if spec is None:
        known = ", ".join(registry.kinds) or "none"
        raise RegistrationError(
            f"cannot schedule {kind!r}: no such job kind is registered (register it "
            f"first with @engine.job; registered: {known})"
        )
    trigger: CronTrigger | IntervalTrigger
    if cron is not None and every is None:
        trigger = CronTrigger(cron, tz)
    elif every is not None and cron is None:
        trigger = IntervalTrigger(span(every), anchor)
    else:
        raise RegistrationError(f"schedule of {kind!r}: pass exactly one of cron= or every=")
    default: Misfire = "skip" if cron is not None else "once"
    policy = Policy(misfire or default, overlap, span(grace), max_catch_up)
    label = name or kind
    schedules.check_name(label)
    schedule = Schedule(
        label, kind, trigger, policy, schedule_payload(label, spec.payload, payload)
    )
    schedules.add(schedule)
    return schedule


def schedule_payload(label: str, model: Any, value: Payload) -> dict[str, Any]:
    """The JSON payload every fired job gets, validated at registration."""
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


def span(value: float | timedelta) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RegistrationError(f"expected seconds or a timedelta, got {value!r}")
    return timedelta(seconds=value)
