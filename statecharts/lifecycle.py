"""The standard job lifecycle every simple job gets.

pending -> running -> retry_wait -> running ... -> succeeded | quarantined, plus cancelled,
lease expiry (running -> retry_wait | quarantined), the release of a claim whose handler
never started (running -> pending, the attempt not counted) and the operator's requeue.
"""

from __future__ import annotations

from enum import StrEnum

from statecharts.chart import Chart, Effect, Facts, Guard, State, StateKind, Transition, Waiver


class S(StrEnum):
    """State names of the standard lifecycle (never spelled as literals elsewhere)."""

    PENDING = "pending"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    SUCCEEDED = "succeeded"
    QUARANTINED = "quarantined"
    CANCELLED = "cancelled"


class T(StrEnum):
    """Trigger names of the standard lifecycle."""

    START = "start"
    SUCCEED = "succeed"
    FAIL = "fail"
    FAIL_PERMANENT = "fail_permanent"
    EXPIRE = "expire"
    RELEASE = "release"
    CANCEL = "cancel"
    REQUEUE = "requeue"
    WAIT = "wait"  # a polling check says "not yet"
    DEADLINE = "deadline"  # a polling state's deadline passed (fired by the tick)
    ELAPSED = "elapsed"  # a wait state's delay is over (fired by the tick)


ENGINE_TRIGGERS = frozenset(T)
"""Triggers the engine fires itself; a handler's outcomes must be named otherwise."""

TIMER_TRIGGERS = (T.DEADLINE, T.ELAPSED)
"""Fired by the tick when a job is due and no handler should run (in this order)."""


def _attempts_left(facts: Facts) -> bool:
    return facts.attempt < facts.max_attempts


def _due(facts: Facts) -> bool:
    return facts.due_at is None or facts.now is None or facts.due_at <= facts.now


def _deadline_passed(facts: Facts) -> bool:
    return facts.deadline is not None and facts.now is not None and facts.deadline <= facts.now


ATTEMPTS_LEFT = Guard("attempt < max_attempts", _attempts_left, bounds="attempt")
ATTEMPTS_EXHAUSTED = ~ATTEMPTS_LEFT
DUE = Guard("due_at <= now", _due)
DEADLINE_PASSED = Guard("deadline <= now", _deadline_passed, bounds="deadline")
BEFORE_DEADLINE = Guard("now < deadline", lambda f: not _deadline_passed(f), bounds="deadline")

LIFECYCLE_NAME = "lifecycle"

FINAL_STATES = (
    State(S.SUCCEEDED, StateKind.FINAL, success=True, description="done"),
    State(
        S.QUARANTINED,
        StateKind.FINAL,
        success=False,
        description="set aside for an operator: permanent, exhausted or invalid",
    ),
    State(S.CANCELLED, StateKind.FINAL, success=False, description="cancelled"),
)
"""The ends every job has, the standard lifecycle's and every flow's alike."""

_FAILED = (Effect.RECORD_ERROR, Effect.RELEASE_LEASE)


def lifecycle(name: str = LIFECYCLE_NAME) -> Chart:
    """Return the standard job chart."""
    return Chart(
        name=name,
        description="The standard lifecycle: run, retry with backoff, succeed or quarantine.",
        waivers=(
            Waiver(
                "bounded_cycles",
                "running -> pending (release) happens only when a claimed handler never "
                "started: no handler ran, so no work repeats; it is bounded by worker "
                "crashes, not by anything the job does",
                triggers=(T.RELEASE,),
            ),
        ),
        states=(
            State(S.PENDING, StateKind.INITIAL, description="enqueued, waiting for a worker"),
            State(S.RUNNING, StateKind.WORK, description="a worker holds the lease"),
            State(S.RETRY_WAIT, StateKind.WAIT, description="failed; sleeping until due_at"),
            *FINAL_STATES,
        ),
        transitions=(
            Transition(
                T.START, (S.PENDING, S.RETRY_WAIT), S.RUNNING, (DUE,), (Effect.START_ATTEMPT,)
            ),
            Transition(
                T.SUCCEED, (S.RUNNING,), S.SUCCEEDED, (), (Effect.RELEASE_LEASE, Effect.FINISH)
            ),
            Transition(
                T.FAIL,
                (S.RUNNING,),
                S.RETRY_WAIT,
                (ATTEMPTS_LEFT,),
                (*_FAILED, Effect.SCHEDULE_RETRY),
            ),
            Transition(
                T.FAIL,
                (S.RUNNING,),
                S.QUARANTINED,
                (ATTEMPTS_EXHAUSTED,),
                (*_FAILED, Effect.QUARANTINE, Effect.FINISH),
            ),
            Transition(
                T.FAIL_PERMANENT,
                (S.RUNNING,),
                S.QUARANTINED,
                (),
                (*_FAILED, Effect.QUARANTINE, Effect.FINISH),
            ),
            Transition(
                T.EXPIRE,
                (S.RUNNING,),
                S.RETRY_WAIT,
                (ATTEMPTS_LEFT,),
                (*_FAILED, Effect.SCHEDULE_RETRY),
            ),
            Transition(
                T.EXPIRE,
                (S.RUNNING,),
                S.QUARANTINED,
                (ATTEMPTS_EXHAUSTED,),
                (*_FAILED, Effect.QUARANTINE, Effect.FINISH),
            ),
            Transition(
                T.RELEASE,
                (S.RUNNING,),
                S.PENDING,
                (),
                (Effect.UNDO_ATTEMPT, Effect.RELEASE_LEASE),
            ),
            Transition(
                T.CANCEL,
                (S.PENDING, S.RUNNING, S.RETRY_WAIT),
                S.CANCELLED,
                (),
                (Effect.RELEASE_LEASE, Effect.FINISH),
            ),
            Transition(
                T.REQUEUE,
                (S.QUARANTINED, S.CANCELLED),
                S.PENDING,
                (),
                (Effect.RESET_ATTEMPTS, Effect.RELEASE_LEASE),
                operator=True,
            ),
        ),
    )
