"""Cron schedules and pollers: when their slots fall, and what one pass fires (no SQL).

A *slot* is an instant (aware UTC) at which a schedule is due. Cron slots come from
croniter run over naive local wall-clock times of the schedule's zone, each localized with
``fold=0`` (PEP 495): a wall time repeated when clocks fall back means its first
occurrence, and one skipped when they spring forward maps forward by the gap. Only strictly
increasing instants are kept, so no instant is ever a slot twice. Poller slots are
``anchor + k * every``: fixed multiples, so run durations never make them drift.

``plan`` decides, from the last slot fired (stored durably) and the time now, which slots
a pass fires and how far it advances the last slot, by the misfire policy; ``Plan.blocked``
applies the overlap policy. The database side is ``engine.store.schedules``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, CroniterError, croniter

from engine.errors import RegistrationError

Misfire = Literal["skip", "once", "catch_up"]
Overlap = Literal["skip", "allow"]
MISFIRES: tuple[Misfire, ...] = ("skip", "once", "catch_up")
OVERLAPS: tuple[Overlap, ...] = ("skip", "allow")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
NEVER = datetime.max.replace(tzinfo=UTC)  # the next check of a schedule with no slot left
TICK = timedelta(microseconds=1)  # the finest step between two instants
DAY = timedelta(days=1)
COUNT_CAP = 1_000  # count missed cron slots up to this many (for the log); beyond, unknown
MAX_STEPS = 1_000_000  # croniter steps one search may take before it is called a bug
SPEC_MAX = 200  # the width of schedules.spec and schedules.name


class Trigger(Protocol):
    """When a schedule's slots fall (aware UTC instants)."""

    @property
    def spec(self) -> str:
        """How it is shown and stored: ``cron */5 * * * * Europe/Paris``, ``every 30s``."""
        ...

    @property
    def key_prefix(self) -> str:
        """The first part of each slot's dedupe key (``cron`` or ``every``)."""
        ...

    def next_after(self, t: datetime) -> datetime | None:
        """The first slot strictly after ``t``, or None when no slot is left."""
        ...

    def latest(self, t: datetime) -> datetime | None:
        """The last slot at or before ``t``, or None when there is none."""
        ...

    def count(self, after: datetime, until: datetime) -> int | None:
        """How many slots fall in ``(after, until]``; None when too many to count cheaply."""
        ...


# Each field's name, how many values it has, and the period it repeats in.
CRON_FIELDS = (
    ("minute", 60, "hour"),
    ("hour", 24, "day"),
    ("day of month", 31, "month"),
    ("month", 12, "year"),
    ("weekday", 7, "week"),
)


def _check_steps(expr: str) -> None:
    """Refuse a step no smaller than its field's range (``*/61`` in minutes): croniter
    accepts it and fires at the range's start only (hourly), which nobody writes on
    purpose."""
    for (name, span, period), field_ in zip(CRON_FIELDS, expr.split(), strict=False):
        for part in field_.split(","):
            if "/" not in part:
                continue
            step = part.split("/", 1)[1]
            if step.isdigit() and int(step) >= span:
                raise RegistrationError(
                    f"malformed cron expression {expr!r}: step /{step} in the {name} field "
                    f"is not below its {span} values, so it would fire once per {period} only"
                )


@dataclass(frozen=True)
class CronTrigger:
    """Slots of a cron expression in a time zone (see the module docstring for DST)."""

    expr: str
    tz: str = "UTC"
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            zone = ZoneInfo(self.tz)
        except (KeyError, ValueError) as error:  # ZoneInfoNotFoundError is a KeyError
            reason = error.args[0] if error.args else error
            raise RegistrationError(f"unknown time zone {self.tz!r}: {reason}") from error
        object.__setattr__(self, "zone", zone)
        _check_steps(self.expr)
        try:
            croniter(self.expr)
        except (CroniterError, ValueError) as error:
            raise RegistrationError(
                f"malformed cron expression {self.expr!r}: {error} (croniter)"
            ) from error
        now = datetime.now(UTC)
        try:
            upcoming = self.next_after(now)
        except (CroniterError, ValueError) as error:
            raise RegistrationError(f"cron expression {self.expr!r}: {error} (croniter)") from error
        if upcoming is None:
            raise RegistrationError(
                f"cron expression {self.expr!r} never fires after {now:%Y-%m-%d %H:%M} UTC"
            )
        if len(self.spec) > SPEC_MAX:
            raise RegistrationError(f"cron spec {self.spec!r} is longer than {SPEC_MAX} chars")

    @property
    def spec(self) -> str:
        return f"cron {self.expr} {self.tz}"

    @property
    def key_prefix(self) -> str:
        return "cron"

    def next_after(self, t: datetime) -> datetime | None:
        # Start early enough that no wall time whose instant is after t is passed over: a
        # wall time n is the instant n - offset(n), and offset(n) >= the smallest offset near t.
        offsets = self._offsets(t)
        start = _naive_utc(t) + min(offsets)
        best: datetime | None = None
        for wall in self._walls(start, forward=True):
            # Walls come in wall-clock order, but around a DST gap that is not a whole hour
            # their instants interleave: keep the earliest until no later wall can beat it
            # (a wall's instant is never before wall - the largest offset).
            if best is not None and wall - max(offsets) > _naive_utc(best):
                return best
            instant = self._instant(wall)
            if instant > t and (best is None or instant < best):
                best = instant
        return best

    def latest(self, t: datetime) -> datetime | None:
        # A backward croniter search finds some slot instant at or before t; stepping
        # forward from it with next_after then lands on the last one the forward sequence
        # has (the two differ only around a spring-forward gap).
        probe = t
        for _ in range(MAX_STEPS):
            candidate = self._instant_at_or_before(probe)
            if candidate is None:
                return None
            slot = self.next_after(candidate - TICK)
            if slot is not None and slot <= t:
                while (following := self.next_after(slot)) is not None and following <= t:
                    slot = following
                return slot
            probe = candidate - TICK
        raise RuntimeError(f"cron {self.expr!r}: no slot found before {t.isoformat()}")

    def count(self, after: datetime, until: datetime) -> int | None:
        found = 0
        slot = self.next_after(after)
        while slot is not None and slot <= until:
            found += 1
            if found > COUNT_CAP:
                return None
            slot = self.next_after(slot)
        return found

    def _instant_at_or_before(self, t: datetime) -> datetime | None:
        start = _naive_utc(t) + max(self._offsets(t)) + timedelta(seconds=1)
        for wall in self._walls(start, forward=False):
            instant = self._instant(wall)
            if instant <= t:
                return instant
        return None

    def _walls(self, start: datetime, *, forward: bool) -> Iterator[datetime]:
        """Naive wall-clock times of the expression after (or before) ``start``."""
        it = croniter(self.expr, start)
        step = it.get_next if forward else it.get_prev
        for _ in range(MAX_STEPS):
            try:
                wall: datetime = step(datetime)
            except CroniterBadDateError:  # no date matches any more (or any earlier)
                return
            yield wall
        raise RuntimeError(f"cron {self.expr!r}: {MAX_STEPS} steps from {start} found nothing")

    def _instant(self, wall: datetime) -> datetime:
        """A naive wall time in the zone as a UTC instant; fold=0 (see module docstring)."""
        return wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)

    def _offsets(self, t: datetime) -> list[timedelta]:
        """The zone's UTC offsets a day either side of ``t`` (a DST change lies between)."""
        offsets = []
        for moment in (t - DAY, t, t + DAY):
            offset = moment.astimezone(self.zone).utcoffset()
            offsets.append(offset if offset is not None else timedelta(0))
        return offsets


@dataclass(frozen=True)
class IntervalTrigger:
    """Slots at ``anchor + k * every`` for every integer k: a poller's fixed cadence."""

    every: timedelta
    anchor: datetime = EPOCH

    def __post_init__(self) -> None:
        if self.every < TICK:
            raise RegistrationError(f"every must be at least 1 microsecond, got {self.every!r}")
        if self.anchor.tzinfo is None:
            raise RegistrationError("a poller's anchor must be a timezone-aware datetime")
        object.__setattr__(self, "anchor", self.anchor.astimezone(UTC))

    @property
    def spec(self) -> str:
        text = f"every {seconds_text(self.every)}"
        if self.anchor != EPOCH:
            text += f" from {self.anchor.isoformat()}"
        return text

    @property
    def key_prefix(self) -> str:
        return "every"

    def next_after(self, t: datetime) -> datetime | None:
        return self._slot(self._index(t) + 1)

    def latest(self, t: datetime) -> datetime | None:
        return self._slot(self._index(t))

    def count(self, after: datetime, until: datetime) -> int | None:
        return max(0, self._index(until) - self._index(after))

    def _index(self, t: datetime) -> int:
        """k of the last slot at or before ``t`` (exact integer arithmetic, no float drift)."""
        return (t - self.anchor) // self.every

    def _slot(self, index: int) -> datetime | None:
        try:
            return self.anchor + index * self.every
        except OverflowError:  # beyond year 9999
            return None


@dataclass(frozen=True)
class Policy:
    """What a pass does with late slots (misfire) and with a previous job still running
    (overlap). ``grace``: how late a slot may be and still count as on time (misfire skip).
    ``max_catch_up``: the most missed slots catch_up fires; older ones are skipped."""

    misfire: Misfire = "skip"
    overlap: Overlap = "skip"
    grace: timedelta = timedelta(seconds=60)
    max_catch_up: int = 10

    def __post_init__(self) -> None:
        if self.misfire not in MISFIRES:
            raise RegistrationError(f"misfire must be one of {MISFIRES}, got {self.misfire!r}")
        if self.overlap not in OVERLAPS:
            raise RegistrationError(f"overlap must be one of {OVERLAPS}, got {self.overlap!r}")
        if self.grace < timedelta(0):
            raise RegistrationError(f"grace must be >= 0, got {self.grace!r}")
        if not isinstance(self.max_catch_up, int) or self.max_catch_up < 1:
            raise RegistrationError(f"max_catch_up must be an int >= 1, got {self.max_catch_up!r}")

    @property
    def serial(self) -> bool:
        """At most one unfinished job of the schedule at a time (overlap skip)."""
        return self.overlap == "skip"

    def describe(self) -> str:
        misfire = {
            "skip": f"skip (grace {seconds_text(self.grace)})",
            "once": "once",
            "catch_up": f"catch_up (max {self.max_catch_up})",
        }[self.misfire]
        return f"misfire {misfire}, overlap {self.overlap}"


@dataclass(frozen=True)
class Missed:
    """Slots a pass skipped as too late: the first and last of them, and how many."""

    first: datetime
    last: datetime
    count: int | None  # None: too many to count cheaply


@dataclass(frozen=True)
class Plan:
    """What one pass does for one schedule.

    ``fire``: slots to fire now, oldest first. ``advance_to``: the new last slot (None:
    leave it). ``missed``: slots skipped as too late. ``overlapped``: slots skipped because
    the previous job was unfinished. ``waiting``: slots held back until that job finishes
    (catch_up with overlap skip), so the pass writes nothing.
    """

    fire: tuple[datetime, ...] = ()
    advance_to: datetime | None = None
    missed: Missed | None = None
    overlapped: tuple[datetime, ...] = ()
    waiting: bool = False

    def blocked(self, policy: Policy) -> Plan:
        """This plan when the previous job is still unfinished and overlap is skip.

        catch_up promises every recent slot a run, so its slots wait for that job; the
        other policies skip the slots they would have fired and still advance.
        """
        if not self.fire:
            return self
        if policy.misfire == "catch_up":
            return Plan(waiting=True)
        return replace(self, fire=(), overlapped=self.fire)


def plan(trigger: Trigger, policy: Policy, last: datetime | None, now: datetime) -> Plan:
    """The slots due after ``last`` (the last one fired) up to ``now``, by the misfire policy.

    skip: fire the latest due slot only if it is on time (within ``grace``); once: fire
    the latest due slot; catch_up: fire the latest ``max_catch_up`` due slots, oldest first
    (one per pass when overlap is skip, so each waits for the one before). Every other due
    slot is skipped, and the last slot advances past all of them.
    """
    latest = trigger.latest(now)
    if latest is None or (last is not None and latest <= last):
        return Plan()
    if policy.misfire == "skip":
        on_time = now - latest <= policy.grace
        fire = (latest,) if on_time else ()
        missed = _missed(trigger, last, latest if on_time else latest + TICK)
        return Plan(fire=fire, advance_to=latest, missed=missed)
    if policy.misfire == "once":
        return Plan(fire=(latest,), advance_to=latest, missed=_missed(trigger, last, latest))
    backlog = [latest]
    while len(backlog) < policy.max_catch_up:
        earlier = trigger.latest(backlog[0] - TICK)
        if earlier is None or (last is not None and earlier <= last):
            break
        backlog.insert(0, earlier)
    missed = _missed(trigger, last, backlog[0])
    if policy.serial:
        return Plan(fire=(backlog[0],), advance_to=backlog[0], missed=missed)
    return Plan(fire=tuple(backlog), advance_to=latest, missed=missed)


def _missed(trigger: Trigger, last: datetime | None, before: datetime) -> Missed | None:
    """The slots after ``last`` and strictly before ``before``, or None if there are none."""
    if last is None:
        return None  # a schedule that never fired has no missed slots to report
    first = trigger.next_after(last)
    if first is None or first >= before:
        return None
    final = trigger.latest(before - TICK)
    if final is None:
        return None
    return Missed(first, final, trigger.count(last, final))


@dataclass(frozen=True)
class Schedule:
    """A registered schedule: which kind it fires, when, with what payload, and how."""

    name: str
    kind: str
    trigger: CronTrigger | IntervalTrigger
    policy: Policy
    payload: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > SPEC_MAX:
            raise RegistrationError(
                f"a schedule name must be 1 to {SPEC_MAX} characters, got {self.name!r}"
            )

    @property
    def spec(self) -> str:
        return self.trigger.spec

    def key(self, slot: datetime) -> str:
        """The slot's dedupe key, the same whichever scheduler fires it."""
        return f"{self.trigger.key_prefix}:{self.name}:{slot.astimezone(UTC).isoformat()}"

    def period(self, slot: datetime) -> timedelta:
        """The time from ``slot`` to the next slot (zero when none follows)."""
        following = self.trigger.next_after(slot)
        return following - slot if following is not None else timedelta(0)


class ScheduleRegistry:
    """An engine's schedules, and per schedule the earliest time its next slot can be due.

    That time is a hint refreshed by every pass from the stored last slot (which only moves
    forward), so a pass that finds no schedule due asks the database nothing, and an
    engine with no schedules never does.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, Schedule] = {}
        self._next_check: dict[str, datetime] = {}
        self._waiting: set[str] = set()  # slots held back until the previous job finishes

    def add(self, schedule: Schedule) -> None:
        self.check_name(schedule.name)
        self._by_name[schedule.name] = schedule

    def check_name(self, name: str) -> None:
        """Refuse a name already taken (pass ``name=`` to give a second schedule its own)."""
        if name in self._by_name:
            raise RegistrationError(
                f"a schedule named {name!r} is already registered; pass name= to tell them apart"
            )

    def get(self, name: str) -> Schedule | None:
        return self._by_name.get(name)

    def of_kind(self, kind: str) -> list[Schedule]:
        return [s for s in self._by_name.values() if s.kind == kind]

    def __iter__(self) -> Iterator[Schedule]:
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def due(self, now: datetime) -> list[Schedule]:
        """The schedules whose next slot may be due at ``now`` (never checked counts), and
        those whose due slots wait for the previous job: it may have finished since."""
        return [
            s
            for s in self._by_name.values()
            if s.name in self._waiting or self._next_check.get(s.name, EPOCH) <= now
        ]

    def note(self, name: str, next_check: datetime | None, *, waiting: bool = False) -> None:
        """Remember when ``name`` next needs a look (None: never, no slot is left).

        A ``waiting`` schedule is looked at by every pass (one read), since nothing tells
        this engine when the job it waits for finishes; ``next_check`` then only bounds how
        long an idle worker sleeps.
        """
        self._next_check[name] = NEVER if next_check is None else next_check
        if waiting:
            self._waiting.add(name)
        else:
            self._waiting.discard(name)

    def sooner(self, when: datetime | None) -> datetime | None:
        """The earlier of ``when`` and the next time any schedule needs a look."""
        if not self._by_name:
            return when
        check = min(self._next_check.get(name, EPOCH) for name in self._by_name)
        if check == NEVER:
            return when
        return check if when is None else min(when, check)


def seconds_text(span: timedelta) -> str:
    """``timedelta(seconds=90)`` -> ``90s``, ``timedelta(hours=1)`` -> ``1h``."""
    seconds = span.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _naive_utc(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None)


MAX_AGE_SECONDS = 100 * 365 * 86400


def parse_age(text: str) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"15m"``, ``"12h"`` or ``"7d"``."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    factor = units.get(text[-1:])
    number = text[:-1] if factor else text
    try:
        value = float(number) * (factor or 1)
    except ValueError:
        raise ValueError(f"not an age: {text!r} (use e.g. 3600, 90m, 12h or 7d)") from None
    if not math.isfinite(value):
        raise ValueError(f"not an age: {text!r} (use e.g. 3600, 90m, 12h or 7d)")
    if value < 0:
        raise ValueError(f"an age cannot be negative: {text!r}")
    if value > MAX_AGE_SECONDS:
        raise ValueError(f"an age of more than 100 years is not an age: {text!r}")
    return value
