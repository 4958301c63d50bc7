"""Run statecharts as persisted jobs: the public surface of jobcharts' engine."""

from engine.clock import Clock, FrozenClock, OffsetClock, SystemClock
from engine.context import JobContext
from engine.engine import Engine
from engine.errors import (
    Cancelled,
    IdempotencyRequired,
    JobchartsError,
    JobNotFound,
    LeaseLost,
    PayloadTooLarge,
    Permanent,
    RegistrationError,
    ResultTooLarge,
    StepResultError,
    TransitionNotAllowed,
    UnknownJobKind,
)
from engine.limits import Limit, Rate
from engine.registry import Invariant, NoPayload, StepHandler
from engine.report import TickReport
from engine.retry import NoRetry, RetryPolicy, backoff
from engine.view import ErrorInfo, EventView, JobView
from engine.worker import Worker

__all__ = [
    "Cancelled",
    "Clock",
    "Engine",
    "ErrorInfo",
    "EventView",
    "FrozenClock",
    "IdempotencyRequired",
    "Invariant",
    "JobContext",
    "JobNotFound",
    "JobView",
    "JobchartsError",
    "LeaseLost",
    "Limit",
    "NoPayload",
    "NoRetry",
    "OffsetClock",
    "PayloadTooLarge",
    "Permanent",
    "Rate",
    "RegistrationError",
    "ResultTooLarge",
    "RetryPolicy",
    "StepHandler",
    "StepResultError",
    "SystemClock",
    "TickReport",
    "TransitionNotAllowed",
    "UnknownJobKind",
    "Worker",
    "backoff",
]
