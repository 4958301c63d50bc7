"""What an attempt comes to: the claimed job, its outcome, why it failed, and the names
the engine records for its own failures (error classes) and for quarantines (reasons).

These names are stored in job rows and shown by ``inspect``: they are declared once here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.registry import JobSpec, StepSpec


class ErrorClass(StrEnum):
    """The error class recorded when the engine, not the handler, ends an attempt."""

    LEASE_EXPIRED = "LeaseExpired"  # the lease ran out while the handler may have run
    DEADLINE_PASSED = "DeadlinePassed"  # a polling state's deadline passed
    WORKER_SHUTDOWN = "WorkerShutdown"  # a stopping worker gave up a running handler
    UNSTORABLE = "UnstorableOutcome"  # the outcome could not be turned into a transition
    HANDLER_TIMEOUT = "HandlerTimeout"  # the handler ran past its timeout
    SLOT_CRASHED = "SlotCrashed"  # the handler thread's runner itself failed
    RUNNER_FAILED = "RunnerFailedToStart"  # the handler process could not be started
    PROCESS_DIED = "HandlerProcessDied"  # the handler process died mid-attempt
    CORRUPT_PAYLOAD = "CorruptPayload"  # the stored payload is not JSON any more
    UNDECLARED_OUTCOME = "UndeclaredOutcome"  # a flow handler named an outcome not declared
    UNRESCUABLE = "Unrescuable"  # an expired lease in a state no transition leaves
    UNKNOWN_STATE = "UnknownState"  # the row's state is not one of its chart version's
    CORRUPT_ROW = "CorruptRow"  # a column no longer reads back (a timestamp, a lost due time)
    ATTEMPTS_EXCEEDED = "AttemptsExceeded"  # the row made more attempts than its budget
    MIGRATED = "Migrated"  # a chart migration sent the job to quarantine


class QuarantineReason(StrEnum):
    """Why a job was quarantined (``jobs.quarantine_reason``)."""

    EXHAUSTED = "exhausted"  # failed on every allowed attempt
    PERMANENT = "permanent"  # the handler raised Permanent (or a permanent error class)
    INVALID_PAYLOAD = "invalid_payload"  # the stored payload no longer validates
    NOT_JSON = "not_json"  # a result or step result could not be stored as JSON
    UNDECLARED_OUTCOME = "undeclared_outcome"  # a flow handler returned no declared outcome
    DEADLINE = "deadline"  # a polling state's deadline passed (its chart quarantines)
    UNKNOWN_STATE = "unknown_state"  # a state its chart never had (hand-edited row)
    CORRUPT_ROW = "corrupt_row"  # a column that no longer reads back
    ATTEMPTS_EXCEEDED = "attempts_exceeded"  # more attempts than its budget allows
    MIGRATED = "migrated"  # a chart migration holds it for an operator
    TOO_LARGE = "too_large"  # a result over the engine's size limit


@dataclass(frozen=True)
class Failure:
    """Why an attempt failed: error class, message, traceback, and a quarantine reason."""

    error_class: str
    message: str
    traceback: str = ""
    reason: str | None = None  # a QuarantineReason, for fail_permanent

    def __post_init__(self) -> None:
        # Plain strings from here on (logs, JSON, columns), whether or not an enum was given.
        object.__setattr__(self, "error_class", str(self.error_class))
        if self.reason is not None:
            object.__setattr__(self, "reason", str(self.reason))

    @classmethod
    def of(cls, error: BaseException, tb: str = "", reason: str | None = None) -> Failure:
        kind = type(error)
        name = (
            kind.__qualname__
            if kind.__module__ in ("builtins", "engine.errors")
            else (f"{kind.__module__}.{kind.__qualname__}")
        )
        return cls(name, str(error), tb, reason)


@dataclass
class Claimed:
    """A job this worker holds a lease on, as claimed."""

    job_id: int
    kind: str
    state: str
    version: int
    lease_token: str | None
    attempt: int
    max_attempts: int
    payload: Any
    correlation_id: str
    spec: JobSpec
    steps: dict[str, Any]
    deadline: datetime | None = None
    trace_context: str | None = None  # the enqueue's span (tracing): its trace continues

    @property
    def step(self) -> StepSpec:
        """How the handler of the state this job was claimed into runs."""
        return self.spec.step_for(self.state)

    @property
    def timeout(self) -> float:
        return self.step.timeout


@dataclass(frozen=True)
class Outcome:
    """What an attempt asks the chart to do next; ``fenced`` means commit nothing."""

    claimed: Claimed
    trigger: str
    failure: Failure | None = None
    result: Any = None
    duration: float = 0.0
    fenced: bool = False
