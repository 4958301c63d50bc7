"""Multi-step charts: declare the steps of a job, get a complete, checkable chart.

A flow lists its steps in order; the first runs first. Each step names the outcomes its
handler may return and where each leads. ``flow`` adds what every step needs and nobody
should write by hand: the claim (``start``), bounded retries with backoff (``fail``,
``expire``), the release of a claim whose handler never started, cancellation, the
operator's requeue, and the built-in final states::

    payout = flow(
        "payout",
        Work("charge", on={"charged": "await_settlement", "declined": "declined"}),
        Poll("await_settlement", every=60, deadline=3600,
             on={"settled": "notify"}, on_deadline="refund"),
        Work("notify", on={"notified": "succeeded"}),
        Work("refund", on={"refunded": "refunded"}),
        Final("declined", success=False),
        Final("refunded", success=False),
    )

The result is a plain ``Chart``: the engine runs it, ``render`` draws it, ``check`` checks
it and the generated tests explore it, all from this one declaration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from statecharts.chart import (
    Chart,
    ChartError,
    Effect,
    Guard,
    Migration,
    State,
    StateKind,
    Transition,
    Waiver,
)
from statecharts.lifecycle import (
    ATTEMPTS_EXHAUSTED,
    ATTEMPTS_LEFT,
    BEFORE_DEADLINE,
    DEADLINE_PASSED,
    DUE,
    ENGINE_TRIGGERS,
    FINAL_STATES,
    S,
    T,
)

QUARANTINED = str(S.QUARANTINED)
CANCELLED = str(S.CANCELLED)


@dataclass(frozen=True)
class Work:
    """A work state: its handler runs under a lease and returns one of ``on``'s outcomes.

    When its attempts are exhausted (or it raises ``Permanent``) the job goes to
    ``on_error``: quarantined by default, or a compensating step. ``on_cancel``: where an
    operator's cancel leads from this step (cancelled by default, or a compensating step);
    None makes the step impossible to cancel (a compensation that must finish).
    """

    name: str
    on: Mapping[str, str]
    on_error: str = QUARANTINED
    on_cancel: str | None = CANCELLED
    description: str = ""


@dataclass(frozen=True)
class Poll:
    """A polling wait state: its check runs every ``every`` seconds until it returns one of
    ``on``'s outcomes (``None`` means not yet), at most until ``deadline`` seconds after the
    state was entered; then the job goes to ``on_deadline``."""

    name: str
    every: float
    deadline: float
    on: Mapping[str, str]
    on_deadline: str = QUARANTINED
    on_error: str = QUARANTINED
    on_cancel: str | None = CANCELLED
    description: str = ""


@dataclass(frozen=True)
class Wait:
    """A timer: the job sleeps ``delay`` seconds, then goes to ``then``; ``on_cancel`` as
    for ``Work``."""

    name: str
    delay: float
    then: str
    on_cancel: str | None = CANCELLED
    description: str = ""


@dataclass(frozen=True)
class Final:
    """A final state of the flow's own (succeeded, quarantined, cancelled are built in)."""

    name: str
    success: bool
    description: str = ""


FlowStep = Work | Poll | Wait | Final

_RELEASE_WAIVER = Waiver(
    "bounded_cycles",
    "a step's release (claimed, handler never started) goes back to the same step without "
    "counting an attempt: no handler ran, so no work repeats; it is bounded by worker "
    "crashes, not by anything the job does",
    triggers=(T.RELEASE,),
)

_FAILED = (Effect.RECORD_ERROR, Effect.RELEASE_LEASE)


@dataclass
class _Builder:
    name: str
    steps: tuple[FlowStep, ...]
    states: list[State] = field(default_factory=list)
    transitions: list[Transition] = field(default_factory=list)

    def final_names(self) -> set[str]:
        return {s.name for s in self.states if s.kind is StateKind.FINAL}

    def arrive(self, dest: str) -> tuple[Effect, ...]:
        """Effects of arriving at ``dest``: finish a final state, else enter the next step."""
        if dest in self.final_names():
            return (Effect.QUARANTINE, Effect.FINISH) if dest == QUARANTINED else (Effect.FINISH,)
        return (Effect.ENTER_STEP,)

    def add(
        self, trigger: str, source: str, dest: str, *guards: Guard, effects: tuple[Effect, ...] = ()
    ) -> None:
        self.transitions.append(Transition(trigger, (source,), dest, guards, effects))

    def handler_step(self, step: Work | Poll) -> None:
        """What every step with a handler shares: claim, outcomes, retries, release."""
        name = step.name
        start_guards = (DUE, BEFORE_DEADLINE) if isinstance(step, Poll) else (DUE, ATTEMPTS_LEFT)
        self.add(T.START, name, name, *start_guards, effects=(Effect.START_ATTEMPT,))
        for outcome, dest in step.on.items():
            self.add(outcome, name, dest, effects=(Effect.RELEASE_LEASE, *self.arrive(dest)))
        if isinstance(step, Poll):
            self.add(
                T.WAIT,
                name,
                name,
                BEFORE_DEADLINE,
                effects=(Effect.RELEASE_LEASE, Effect.SCHEDULE_POLL),
            )
            for trigger in (T.WAIT, T.DEADLINE):
                self.add(
                    trigger,
                    name,
                    step.on_deadline,
                    DEADLINE_PASSED,
                    effects=(
                        Effect.RECORD_ERROR,  # why it left: the deadline passed
                        Effect.RELEASE_LEASE,
                        *self.arrive(step.on_deadline),
                    ),
                )
        for trigger in (T.FAIL, T.EXPIRE):
            self.add(
                trigger,
                name,
                name,
                ATTEMPTS_LEFT,
                effects=(*_FAILED, Effect.SCHEDULE_RETRY),
            )
            self.add(
                trigger,
                name,
                step.on_error,
                ATTEMPTS_EXHAUSTED,
                effects=(*_FAILED, *self.arrive(step.on_error)),
            )
        self.add(
            T.FAIL_PERMANENT, name, step.on_error, effects=(*_FAILED, *self.arrive(step.on_error))
        )
        self.add(T.RELEASE, name, name, effects=(Effect.UNDO_ATTEMPT, Effect.RELEASE_LEASE))


def flow(
    name: str,
    *steps: FlowStep,
    description: str = "",
    waivers: tuple[Waiver, ...] = (),
    migrations: Mapping[str, str] | Iterable[Migration] = (),
    label: str = "",
) -> Chart:
    """Build the chart of a multi-step job from its steps (the first step runs first).

    ``migrations``: where jobs of older versions go from states this version no longer
    has, ``{"old": "new"}`` or ``Migration`` items (see ``statecharts.chart.Migration``);
    ``label``: a human name for this version.
    """
    builder = _Builder(name, steps)
    runnable = [s for s in steps if not isinstance(s, Final)]
    if not runnable or not isinstance(runnable[0], Work):
        raise ChartError(f"flow {name!r}: the first step must be a Work step")
    for step in steps:
        _check_step(name, step)
    builder.states.append(
        State(S.PENDING, StateKind.INITIAL, description="enqueued, waiting for a worker")
    )
    for step in steps:
        builder.states.append(_state_of(step))
    declared = {s.name for s in steps}
    builder.states += [s for s in FINAL_STATES if s.name not in declared]
    first = runnable[0].name
    builder.add(T.START, S.PENDING, first, DUE, effects=(Effect.START_ATTEMPT,))
    for step in steps:
        if isinstance(step, Work | Poll):
            builder.handler_step(step)
        elif isinstance(step, Wait):
            builder.add(
                T.ELAPSED,
                step.name,
                step.then,
                DUE,
                effects=(Effect.RELEASE_LEASE, *builder.arrive(step.then)),
            )
    cancels: dict[str, list[str]] = {CANCELLED: [str(S.PENDING)]}
    for step in runnable:
        dest = step.on_cancel
        if dest is not None:
            cancels.setdefault(dest, []).append(step.name)
    for dest, sources in cancels.items():
        builder.transitions.append(
            Transition(
                T.CANCEL,
                tuple(sources),
                dest,
                (),
                (Effect.RELEASE_LEASE, *builder.arrive(dest)),
            )
        )
    finals_left = tuple(
        s.name for s in builder.states if s.kind is StateKind.FINAL and s.name != S.SUCCEEDED
    )
    builder.transitions.append(
        Transition(
            T.REQUEUE,
            tuple(s for s in finals_left if s in (S.QUARANTINED, S.CANCELLED)),
            S.PENDING,
            (),
            (Effect.RESET_ATTEMPTS, Effect.RELEASE_LEASE),
            operator=True,
        )
    )
    return Chart(
        name=name,
        states=tuple(builder.states),
        transitions=tuple(builder.transitions),
        description=description,
        waivers=(_RELEASE_WAIVER, *waivers),
        migrations=as_migrations(migrations),
        label=label,
    )


def as_migrations(migrations: Mapping[str, str] | Iterable[Migration]) -> tuple[Migration, ...]:
    """``{"old": "new"}`` or ``Migration`` items, as the chart's tuple."""
    if isinstance(migrations, Mapping):
        return tuple(Migration(old, new) for old, new in migrations.items())
    return tuple(migrations)


def _state_of(step: FlowStep) -> State:
    if isinstance(step, Work):
        return State(step.name, StateKind.WORK, description=step.description)
    if isinstance(step, Poll):
        return State(
            step.name,
            StateKind.WAIT,
            description=step.description,
            every=step.every,
            deadline=step.deadline,
        )
    if isinstance(step, Wait):
        return State(step.name, StateKind.WAIT, description=step.description, delay=step.delay)
    return State(step.name, StateKind.FINAL, success=step.success, description=step.description)


def _check_step(flow_name: str, step: FlowStep) -> None:
    if isinstance(step, Poll) and not step.every < step.deadline:
        raise ChartError(
            f"flow {flow_name!r}: poll {step.name!r} checks every {step.every:g}s but its "
            f"deadline is {step.deadline:g}s: it would never check; make every < deadline"
        )
    if isinstance(step, Work | Poll):
        if isinstance(step, Work) and not step.on:
            raise ChartError(f"flow {flow_name!r}: step {step.name!r} declares no outcome (on=)")
        taken = sorted(set(step.on) & ENGINE_TRIGGERS)
        if taken:
            raise ChartError(
                f"flow {flow_name!r}: step {step.name!r} names outcome(s) {taken}, which the "
                f"engine fires itself; engine triggers are {sorted(ENGINE_TRIGGERS)}"
            )


def outcomes(chart: Chart, state: str) -> tuple[str, ...]:
    """The triggers a handler running in ``state`` may return (not the engine's own)."""
    seen: dict[str, None] = {}
    for transition in chart.transitions:
        if state in transition.sources and transition.trigger not in ENGINE_TRIGGERS:
            seen.setdefault(transition.trigger, None)
    return tuple(seen)


def handler_states(chart: Chart) -> tuple[str, ...]:
    """States where a handler runs: the destinations of ``start``."""
    seen: dict[str, None] = {}
    for transition in chart.transitions:
        if transition.trigger == T.START:
            seen.setdefault(transition.dest, None)
    return tuple(seen)
