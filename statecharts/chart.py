"""Charts as data: states, guards, effects and transitions, validated when declared.

A chart is plain frozen data so that the engine, the diagrams, the static checks and the
generated tests all read the same declaration and can never drift apart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class ChartError(ValueError):
    """A chart declaration that cannot be run: the message says what is wrong and where."""


class StateKind(StrEnum):
    """What a state means to the engine."""

    INITIAL = "initial"  # where every job starts; exactly one per chart
    WORK = "work"  # a handler runs while the job holds a lease
    WAIT = "wait"  # a timer: the job sleeps until its due_at
    FINAL = "final"  # absorbing: only an operator transition leaves it


@dataclass(frozen=True)
class State:
    """A named state; final states say whether they mean success (for views and styling).

    Timers, in seconds, are part of the chart (diagrams show them): a polling wait state
    runs its check ``every`` seconds until ``deadline`` seconds after it was entered; a
    plain wait state sleeps ``delay`` seconds once entered.
    """

    name: str
    kind: StateKind
    success: bool | None = None
    description: str = ""
    every: float | None = None
    deadline: float | None = None
    delay: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", str(self.name))  # enum members become plain names
        try:
            object.__setattr__(self, "kind", StateKind(self.kind))
        except ValueError:
            kinds = [k.value for k in StateKind]
            raise ChartError(
                f"state {self.name!r}: unknown kind {self.kind!r}; kinds are {kinds}"
            ) from None
        for timer in ("every", "deadline", "delay"):
            value = getattr(self, timer)
            if value is None:
                continue
            if self.kind is not StateKind.WAIT:
                raise ChartError(f"state {self.name!r}: only wait states have {timer}=")
            if not (isinstance(value, int | float) and 0 < value < float("inf")):
                raise ChartError(
                    f"state {self.name!r}: {timer} must be a positive number of seconds, "
                    f"got {value!r}"
                )
        if (self.every is None) != (self.deadline is None):
            raise ChartError(
                f"state {self.name!r}: a polling state needs both every= and deadline= "
                "(check every INTERVAL, at most until DEADLINE)"
            )
        if self.every is not None and self.delay is not None:
            raise ChartError(f"state {self.name!r}: a polling state has no delay=")

    @property
    def polls(self) -> bool:
        """A polling wait state: a check handler runs every ``every`` seconds."""
        return self.every is not None

    @property
    def is_final(self) -> bool:
        return self.kind is StateKind.FINAL


@dataclass(frozen=True)
class Facts:
    """What a guard may look at: the persisted columns of one job at one instant."""

    attempt: int
    max_attempts: int
    now: datetime | None = None
    due_at: datetime | None = None
    deadline: datetime | None = None
    error_class: str | None = None


@dataclass(frozen=True)
class Guard:
    """A named predicate over a job's facts. The name is what diagrams and checks show.

    ``bounds`` names the persisted counter the guard limits ("attempt" or "deadline"), so the
    static checks can tell a bounded cycle from an endless one.
    """

    name: str
    test: Callable[[Facts], bool] = field(compare=False)
    bounds: str | None = None

    def __call__(self, facts: Facts) -> bool:
        return self.test(facts)

    def __invert__(self) -> Guard:
        test = self.test
        return Guard(f"not ({self.name})", lambda facts: not test(facts), self.bounds)


class Effect(StrEnum):
    """What the engine writes atomically with a state change (columns, never memory)."""

    START_ATTEMPT = "start_attempt"  # attempt += 1, take a lease, record the start
    RELEASE_LEASE = "release_lease"  # clear the lease token and expiry
    RECORD_ERROR = "record_error"  # keep class, message and a truncated traceback
    SCHEDULE_RETRY = "schedule_retry"  # due_at = now + backoff(attempt)
    RESET_ATTEMPTS = "reset_attempts"  # attempt = 0, due now (operator requeue)
    UNDO_ATTEMPT = "undo_attempt"  # attempt -= 1, due now: the claimed handler never started
    QUARANTINE = "quarantine"  # keep the reason the job was set aside
    FINISH = "finish"  # stamp finished_at
    ENTER_STEP = "enter_step"  # attempt = 0, the next state's attempts, due date, deadline
    SCHEDULE_POLL = "schedule_poll"  # not done yet: attempt = 0, due at the next check


@dataclass(frozen=True)
class Transition:
    """A declared edge: ``trigger`` moves a job from any of ``sources`` to ``dest``.

    Guards are tried in declaration order among transitions of the same trigger and source;
    the first transition whose guards all pass is taken. ``operator`` marks the explicit
    operator actions (requeue) that alone may leave a final state.
    """

    trigger: str
    sources: tuple[str, ...]
    dest: str
    guards: tuple[Guard, ...] = ()
    effects: tuple[Effect, ...] = ()
    operator: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "trigger", str(self.trigger))
        object.__setattr__(self, "sources", tuple(str(s) for s in self.sources))
        object.__setattr__(self, "dest", str(self.dest))

    def allowed(self, facts: Facts) -> bool:
        return all(guard(facts) for guard in self.guards)


@dataclass(frozen=True)
class Waiver:
    """Skips one static check for one chart; the reason is printed wherever it applies.

    ``triggers`` narrows the waiver to the edges of those triggers: the check still fails
    on anything else (a waiver for ``release`` must not hide an unbounded retry loop).
    """

    check: str
    reason: str
    triggers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ChartError(f"waiving {self.check!r} needs a written reason")
        object.__setattr__(self, "triggers", tuple(str(t) for t in self.triggers))


@dataclass(frozen=True)
class Migration:
    """Where the jobs left in a state an older version of the chart had, and this one has
    not, go when a worker of this version meets them: ``old`` -> ``new`` (a rename, a
    merge, or a removed state mapped to another; ``quarantined`` holds them for an
    operator). ``note`` says why, for the history and the diagrams.

    A migrated job enters ``new`` afresh: its timers start again and it gets the new
    state's attempts. ``keep_due`` keeps its due time and deadline instead (a renamed
    wait or polling state: a job that waited 59 of 60 minutes does not wait 60 more).
    """

    old: str
    new: str
    note: str = ""
    keep_due: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "old", str(self.old))
        object.__setattr__(self, "new", str(self.new))


@dataclass(frozen=True)
class Chart:
    """A named set of states and transitions, checked for consistency when created.

    ``migrations`` move the jobs of older versions out of states this version no longer
    has; ``label`` is a human name for this version ("2026-12 split charge"), shown beside
    its structural hash (``statecharts.versions``).
    """

    name: str
    states: tuple[State, ...]
    transitions: tuple[Transition, ...]
    description: str = ""
    waivers: tuple[Waiver, ...] = ()
    migrations: tuple[Migration, ...] = ()
    label: str = ""

    def __post_init__(self) -> None:
        _validate(self)

    @functools.cached_property
    def initial(self) -> State:
        return next(s for s in self.states if s.kind is StateKind.INITIAL)

    @functools.cached_property
    def _by_name(self) -> dict[str, State]:
        return {s.name: s for s in self.states}  # looked up for every move a worker makes

    def state(self, name: str) -> State:
        found = self._by_name.get(name)
        if found is None:
            raise ChartError(f"chart {self.name!r} has no state {name!r}")
        return found

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.states)

    @property
    def triggers(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for transition in self.transitions:
            seen.setdefault(transition.trigger, None)
        return tuple(seen)

    def states_of(self, *kinds: StateKind) -> tuple[str, ...]:
        return tuple(s.name for s in self.states if s.kind in kinds)

    def transitions_for(self, trigger: str, source: str) -> tuple[Transition, ...]:
        return tuple(t for t in self.transitions if t.trigger == trigger and source in t.sources)

    def edge_exists(self, trigger: str, source: str, dest: str) -> bool:
        """True when some declared transition goes ``source --trigger--> dest``."""
        return any(t.dest == dest for t in self.transitions_for(trigger, source))

    def has_state(self, name: str) -> bool:
        return any(s.name == name for s in self.states)

    def migration_for(self, old: str) -> Migration | None:
        """The declared destination of jobs found in ``old``, a state this chart lacks."""
        return next((m for m in self.migrations if m.old == old), None)


def _validate(chart: Chart) -> None:
    if not chart.name:
        raise ChartError("a chart needs a name")
    names = [s.name for s in chart.states]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ChartError(f"chart {chart.name!r}: duplicate states {duplicates}")
    initials = [s.name for s in chart.states if s.kind is StateKind.INITIAL]
    if len(initials) != 1:
        raise ChartError(
            f"chart {chart.name!r} must have exactly one initial state, found {len(initials)}"
            + (f": {initials}" if initials else "")
        )
    known = set(names)
    for transition in chart.transitions:
        if not transition.trigger:
            raise ChartError(f"chart {chart.name!r}: a transition has no trigger")
        if not transition.sources:
            raise ChartError(
                f"chart {chart.name!r}: transition {transition.trigger!r} has no source state"
            )
        unknown = _unknown([*transition.sources, transition.dest], known)
        if unknown:
            raise ChartError(
                f"chart {chart.name!r}: transition {transition.trigger!r} names unknown "
                f"state(s) {unknown}; declared states are {sorted(known)}"
            )
        if not transition.operator:
            leaving = [s for s in transition.sources if chart.state(s).is_final]
            if leaving:
                raise ChartError(
                    f"chart {chart.name!r}: transition {transition.trigger!r} leaves final "
                    f"state(s) {leaving}; final states are absorbing (only operator "
                    "transitions such as requeue may leave them)"
                )
    _validate_migrations(chart)


def _validate_migrations(chart: Chart) -> None:
    known = set(chart.state_names)
    olds = [m.old for m in chart.migrations]
    repeated = sorted({o for o in olds if olds.count(o) > 1})
    if repeated:
        raise ChartError(f"chart {chart.name!r}: more than one migration from {repeated}")
    for migration in chart.migrations:
        if migration.old in known:
            raise ChartError(
                f"chart {chart.name!r}: migration {migration.old!r} -> {migration.new!r} "
                f"moves jobs out of {migration.old!r}, a state this version still has; a "
                "migration maps a state an older version had and this one removed or renamed"
            )
        if migration.new not in known:
            raise ChartError(
                f"chart {chart.name!r}: migration {migration.old!r} -> {migration.new!r} "
                f"leads to unknown state {migration.new!r}; declared states are "
                f"{sorted(known)}"
            )
        if chart.state(migration.new).kind is StateKind.INITIAL:
            raise ChartError(
                f"chart {chart.name!r}: migration {migration.old!r} -> {migration.new!r}: "
                "a migrated job continues where it was; it does not start over (map it to "
                "a step, or to quarantined for an operator to requeue)"
            )


def _unknown(names: Iterable[str], known: set[str]) -> list[str]:
    return sorted({n for n in names if n not in known})
