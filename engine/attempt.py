"""Run one claimed attempt: validate the payload, call the handler, classify the outcome.

The outcome is an explicit value (which trigger to fire, and why), committed later in a
batch by the tick; running a handler never writes the job's state itself.
"""

from __future__ import annotations

import inspect
import threading
import time
import traceback
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError

from engine.aio import HandlerTimeout, run_coroutine
from engine.context import JobContext, current_correlation, to_json_value
from engine.errors import Cancelled, LeaseLost, Permanent, ResultTooLarge, StepResultError
from engine.events import Telemetry
from engine.outcomes import Claimed, ErrorClass, Failure, Outcome, QuarantineReason
from engine.registry import StepSpec, trigger_of
from engine.store.rows import CorruptJSON
from engine.tracing import active as tracing_active
from statecharts import T

logger = structlog.get_logger("jobcharts")


def run_attempt(
    claimed: Claimed, store: Any, now: Callable[[], datetime], telemetry: Telemetry
) -> Outcome:
    """Run ``claimed``'s handler once and say which trigger its outcome fires (inside the
    attempt's span when tracing is on: engine.tracing)."""
    tracing = tracing_active()
    if tracing is None:
        return _run_attempt(claimed, store, now, telemetry)
    with tracing.attempt(
        claimed.kind,
        claimed.state,
        claimed.attempt,
        claimed.job_id,
        claimed.trace_context,
        claimed.spec.is_flow,
    ) as span:
        outcome = _run_attempt(claimed, store, now, telemetry)
        tracing.outcome(span, outcome.trigger, outcome.failure)
        return outcome


def _run_attempt(
    claimed: Claimed, store: Any, now: Callable[[], datetime], telemetry: Telemetry
) -> Outcome:
    spec = claimed.spec
    step = claimed.step
    ids: dict[str, Any] = {
        "job_id": claimed.job_id,
        "kind": claimed.kind,
        "attempt": claimed.attempt,
        "correlation_id": claimed.correlation_id,
        **({"state": claimed.state} if spec.is_flow else {}),
    }
    log = logger.bind(**ids)  # the handler's own logger (ctx.log)
    telemetry.emit("attempt.started", "debug", max_attempts=claimed.max_attempts, **ids)
    started = time.perf_counter()

    def done(trigger: str, **kw: Any) -> Outcome:
        return Outcome(claimed, trigger, duration=time.perf_counter() - started, **kw)

    if isinstance(claimed.payload, CorruptJSON):
        corrupt = Failure(
            ErrorClass.CORRUPT_PAYLOAD,
            f"the stored payload is not valid JSON: {claimed.payload.error}",
            reason=QuarantineReason.INVALID_PAYLOAD,
        )
        return done(T.FAIL_PERMANENT, failure=corrupt)
    try:
        payload = spec.payload.model_validate(claimed.payload)
    except ValidationError as error:
        return done(
            T.FAIL_PERMANENT, failure=Failure.of(error, "", QuarantineReason.INVALID_PAYLOAD)
        )
    ctx = JobContext(
        job_id=claimed.job_id,
        kind=claimed.kind,
        attempt=claimed.attempt,
        max_attempts=claimed.max_attempts,
        correlation_id=claimed.correlation_id,
        lease_token=claimed.lease_token,
        log=log,
        _store=store,
        _steps=dict(claimed.steps),
        _now=now,
        state=claimed.state,
        max_result_bytes=spec.max_result_bytes,
    )
    token = current_correlation.set(claimed.correlation_id)  # child jobs inherit it
    bound = structlog.contextvars.bind_contextvars(correlation_id=claimed.correlation_id)
    try:
        result = step.handler(ctx, payload)
        if inspect.iscoroutine(result):  # an async handler: run on the process's loop
            result = run_coroutine(result, step.timeout)  # (in this context's copy)
        if spec.is_flow:
            return _flow_outcome(step, result, done)
        stored = (
            None
            if result is None
            else to_json_value(result, "a handler's return value", spec.max_result_bytes)
        )
    except LeaseLost as error:
        telemetry.warning("attempt.fenced", reason=str(error), **ids)
        return done(T.FAIL, fenced=True, failure=Failure.of(error))
    except HandlerTimeout as error:  # the task is cancelled: no late result can arrive
        telemetry.warning("attempt.timed_out", timeout=step.timeout, **ids)
        failure = Failure(ErrorClass.HANDLER_TIMEOUT, str(error))
        return done(T.FAIL, failure=failure)
    except Cancelled as error:
        telemetry.info("attempt.cancelled", reason=str(error), **ids)
        return done(T.CANCEL)
    except Permanent as error:
        return done(
            T.FAIL_PERMANENT, failure=Failure.of(error, _trace(), QuarantineReason.PERMANENT)
        )
    except ResultTooLarge as error:  # the same code makes the same result on a retry
        return done(
            T.FAIL_PERMANENT, failure=Failure.of(error, _trace(), QuarantineReason.TOO_LARGE)
        )
    except StepResultError as error:
        # Deterministic: the same code returns the same non-JSON value on every retry, and
        # a step's side effect already happened, so retrying would only repeat it.
        return done(
            T.FAIL_PERMANENT, failure=Failure.of(error, _trace(), QuarantineReason.NOT_JSON)
        )
    except BaseException as error:
        # SystemExit, a BaseException of the handler's own, even KeyboardInterrupt raised on
        # a handler thread: the attempt failed. Only Ctrl-C on the main thread stops the run
        # (the job keeps its lease, which expires and is rescued).
        if isinstance(error, KeyboardInterrupt) and _on_main_thread():
            raise
        if step.retry.permanent and isinstance(error, step.retry.permanent):
            return done(
                T.FAIL_PERMANENT, failure=Failure.of(error, _trace(), QuarantineReason.PERMANENT)
            )
        return done(T.FAIL, failure=Failure.of(error, _trace()))
    finally:
        current_correlation.reset(token)
        structlog.contextvars.reset_contextvars(**bound)
    return done(T.SUCCEED, result=stored)


def _flow_outcome(step: StepSpec, result: Any, done: Callable[..., Outcome]) -> Outcome:
    """The trigger a flow handler's return value names, checked against its state."""
    try:
        trigger = trigger_of(result)
    except TypeError as error:
        trigger, problem = None, str(error)
    else:
        problem = ""
    if trigger is None and not problem:
        if step.polls:
            return done(T.WAIT)
        if len(step.outcomes) == 1:
            return done(step.outcomes[0])
        problem = (
            f"the handler returned None, but {step.state!r} has outcomes {list(step.outcomes)}"
        )
    if trigger is not None and trigger not in step.outcomes:
        problem = (
            f"the handler returned {trigger!r}, which is not an outcome of "
            f"{step.state!r}; its outcomes are {list(step.outcomes)}"
        )
    if problem:
        failure = Failure(
            ErrorClass.UNDECLARED_OUTCOME, problem, reason=QuarantineReason.UNDECLARED_OUTCOME
        )
        return done(T.FAIL_PERMANENT, failure=failure)
    return done(trigger)


def report_finished(
    telemetry: Telemetry,
    outcome: Outcome,
    *,
    committed: bool,
    dest: str | None,
    next_due: datetime | None,
) -> None:
    """The one event every attempt ends with, whatever happened."""
    claimed = outcome.claimed
    fields: dict[str, Any] = {
        "job_id": claimed.job_id,
        "kind": claimed.kind,
        "attempt": claimed.attempt,
        "correlation_id": claimed.correlation_id,
        "outcome": outcome.trigger,
        "from_state": claimed.state,
        "state": dest,
        "duration_ms": round(outcome.duration * 1000, 3),
    }
    if outcome.failure is not None:
        fields["error"] = outcome.failure.error_class
        fields["error_message"] = outcome.failure.message[:300]
    if next_due is not None:
        fields["next_due_at"] = next_due.isoformat()
    if committed:
        level = "info" if outcome.failure is None else "warning"
        telemetry.emit("attempt.finished", level, **fields)
    else:
        telemetry.warning("attempt.fenced_out", **fields)


def _on_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _trace() -> str:
    return traceback.format_exc()
