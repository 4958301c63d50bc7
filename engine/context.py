"""``ctx``: what a handler sees of its job, and the step ledger that makes retries safe."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

import structlog

from engine.errors import Cancelled, LeaseLost, ResultTooLarge, StepResultError

if TYPE_CHECKING:
    from datetime import datetime

    from structlog.typing import FilteringBoundLogger

    from engine.store import Store

R = TypeVar("R")

# The correlation id of the work in progress: a handler's job's, while it runs (so the jobs
# it enqueues and the app's own log lines carry it), or one an app sets for a request.
current_correlation: ContextVar[str | None] = ContextVar("jobcharts_correlation", default=None)


def correlation_in_context() -> str | None:
    """The correlation id of the current context: jobcharts' own (a running handler's), or
    one the app bound with structlog's contextvars (``bind_contextvars(correlation_id=)``)."""
    found = current_correlation.get()
    if found is None:
        bound = structlog.contextvars.get_contextvars().get("correlation_id")
        found = bound if isinstance(bound, str) and 0 < len(bound) <= 64 else None
    return found


def to_json_value(value: Any, what: str, limit: int | None = None) -> Any:
    """``value`` as it will read back from the database, or a StepResultError saying why
    not (not JSON, or more than ``limit`` bytes of it)."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise StepResultError(
            f"{what} must be JSON-serializable (jobcharts stores JSON, never pickle): {error}"
        ) from error
    if limit is not None and len(text) > limit:
        raise ResultTooLarge(
            f"{what} is {len(text):,} bytes of JSON, over the limit of {limit:,} "
            "(Engine(max_result_bytes=...)); store large data elsewhere and keep a reference"
        )
    return json.loads(text)


@dataclass
class JobContext:
    """Handed to every handler: the job's identity, its logger, ``step`` and ``cancelled``."""

    job_id: int
    kind: str
    attempt: int
    max_attempts: int
    correlation_id: str
    lease_token: str | None
    log: FilteringBoundLogger
    _store: Store = field(repr=False)
    _steps: dict[str, Any] = field(default_factory=dict, repr=False)
    _now: Callable[[], datetime] = field(default=lambda: _unset(), repr=False)
    state: str = ""  # the state this handler runs in (a flow's step)
    max_result_bytes: int | None = None  # a step result's JSON may not be larger

    async def acancelled(self) -> bool:
        """``cancelled`` for async handlers (the read runs off the event loop)."""
        return await asyncio.to_thread(self._store.job_cancel_requested, self.job_id)

    @property
    def cancelled(self) -> bool:
        """Whether an operator asked to cancel this job (one read of its row).

        ``step`` checks it before each new step; a long handler may check it between its
        own units of work and return early (or raise ``Cancelled``).
        """
        return self._store.job_cancel_requested(self.job_id)

    def recorded(self, name: str) -> Any:
        """The recorded result of step ``name`` (of this or an earlier state); KeyError if
        that step has not completed."""
        if name not in self._steps:
            raise KeyError(f"job {self.job_id} has no recorded step {name!r}")
        return self._steps[name]

    def step(self, name: str, fn: Callable[[], R]) -> R:
        """Run ``fn`` at most once per job once its JSON result is recorded.

        A later attempt (after a failure or a crash) gets the recorded result instead of
        running ``fn`` again. A crash between ``fn`` returning and the record committing
        runs it again, so ``fn``'s effect must itself be idempotent or keyed (for example
        by ``f"{ctx.job_id}:{name}"``). The result is returned as it reads back from JSON.
        """
        if name in self._steps:
            self.log.debug("step.replayed", step=name)
            return self._steps[name]  # type: ignore[no-any-return]
        if self.cancelled:
            raise Cancelled(f"job {self.job_id} was cancelled before step {name!r}")
        value = to_json_value(fn(), f"the result of step {name!r}", self.max_result_bytes)
        recorded = self._store.step_record(
            job_id=self.job_id,
            lease_token=self.lease_token,
            name=name,
            result=value,
            attempt=self.attempt,
            at=self._now(),
        )
        return self._kept(name, value, recorded)  # type: ignore[no-any-return]

    @overload
    async def astep(self, name: str, fn: Callable[[], Awaitable[R]]) -> R: ...

    @overload
    async def astep(self, name: str, fn: Callable[[], R]) -> R: ...

    async def astep(self, name: str, fn: Callable[[], Any]) -> Any:
        """``step`` for async handlers: ``await ctx.astep("charge", lambda: api.charge())``
        awaits ``fn()`` at most once per job once its result is recorded (the database
        calls run off the event loop, so other handlers keep running meanwhile)."""
        if name in self._steps:
            self.log.debug("step.replayed", step=name)
            return self._steps[name]
        if await self.acancelled():
            raise Cancelled(f"job {self.job_id} was cancelled before step {name!r}")
        produced = fn()
        result = await produced if inspect.isawaitable(produced) else produced
        value = to_json_value(result, f"the result of step {name!r}", self.max_result_bytes)
        recorded = await asyncio.to_thread(
            self._store.step_record,
            job_id=self.job_id,
            lease_token=self.lease_token,
            name=name,
            result=value,
            attempt=self.attempt,
            at=self._now(),
        )
        return self._kept(name, value, recorded)

    def _kept(self, name: str, value: Any, recorded: bool) -> Any:
        """The step's result once its record committed; LeaseLost when the lease was gone."""
        if not recorded:
            raise LeaseLost(
                f"job {self.job_id} step {name!r}: this attempt lost its lease; the step's "
                "result is not recorded"
            )
        self._steps[name] = value
        return value


def _unset() -> datetime:
    raise RuntimeError("JobContext built without a clock")
