"""Handler threads: the threads (each optionally driving a child process) that run attempts.

A handler thread receives a *wave* of claimed attempts and runs them one after another. The
coordinator and the runner agree on what has started through one lock shared by the worker:
an attempt begins only if it was not taken back, and a retired runner begins nothing more.
Whatever a handler does (raise anything, break its runner), the runner turns it into an
outcome and carries on.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from engine.attempt import run_attempt
from engine.claim import Batch
from engine.engine import Engine
from engine.outcomes import Claimed, ErrorClass, Failure, Outcome
from statecharts import T

logger = structlog.get_logger("jobcharts")


@dataclass(eq=False)
class InFlight:
    """One claimed attempt from dispatch until its outcome is committed (or dropped)."""

    claimed: Claimed
    batch: Batch
    started: float | None = None  # when the handler began, on the worker's monotonic clock
    cancelled: bool = False  # taken back before it started
    abandoned: bool = False  # timed out, lease lost or handed back: drop its late result
    timed_out: bool = False


class HandlerThread:
    """A handler thread that runs the waves of attempts it is given, one at a time."""

    def __init__(
        self,
        name: str,
        lock: threading.Lock,
        run: Callable[[InFlight], Outcome],
        done: Callable[[InFlight | None, Outcome | None], None],
        *,
        kill: Callable[[], None] | None = None,
        close: Callable[[], None] | None = None,
        prepare: Callable[[], None] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``monotonic`` stamps ``InFlight.started``; injectable so tests drive time, not sleep."""
        self.lock = lock
        self.inbox: queue.SimpleQueue[list[InFlight] | None] = queue.SimpleQueue()
        self.kill = kill  # set when a running handler can really be stopped (processes)
        self.close = close
        self.prepare = prepare  # readies the runner before an attempt's clock starts
        self.current: InFlight | None = None
        self.pending: list[InFlight] = []
        self.retired = False
        self._run = run
        self._done = done
        self._monotonic = monotonic
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    @property
    def idle(self) -> bool:
        return self.current is None and not self.pending and not self.retired

    def give(self, wave: list[InFlight]) -> None:
        self.pending = list(wave)
        self.inbox.put(wave)

    def retire(self, expected: InFlight | None = None) -> list[InFlight] | None:
        """Begin nothing more; return the queued attempts taken back (never started).

        With ``expected``, retire only if that attempt is still the one running (else
        None: it returned meanwhile and the runner moved on). The call holds the shared
        lock, so an attempt either began before it (and is ``current``) or never will.
        """
        with self.lock:
            if expected is not None and self.current is not expected:
                return None
            self.retired = True
            taken = []
            for item in self.pending:
                if item.started is None and not item.cancelled:
                    item.cancelled = True
                    taken.append(item)
        self.inbox.put(None)  # the thread exits once its current handler returns
        return taken

    def _loop(self) -> None:
        try:
            while True:
                wave = self.inbox.get()
                if wave is None:
                    return
                reported = False
                for index, item in enumerate(wave):
                    reported = self._one(item, last=index == len(wave) - 1)
                if not reported:
                    with self.lock:
                        self.pending = []
                    self._done(None, None)  # wake the coordinator: this runner is idle
        finally:
            if self.close is not None:
                try:
                    self.close()
                except Exception as error:
                    logger.warning("handler_thread.close_failed", error=repr(error))

    def _one(self, item: InFlight, *, last: bool) -> bool:
        """Run one attempt and report its outcome; the ``last`` of a wave also marks the
        runner idle before reporting (one wake of the coordinator, not two). Returns
        whether an outcome was reported."""
        if not self._may_begin(item):
            return False
        not_ready = self._prepare()  # outside the lock: starting a process takes a while
        with self.lock:
            if not self._may_begin(item, locked=True):
                return False
            item.started = self._monotonic()
            self.current = item
        try:
            if not_ready is not None:  # counted: a runner that never starts must not loop
                outcome = _crashed(item.claimed, not_ready, ErrorClass.RUNNER_FAILED)
            else:
                outcome = self._run(item)
        except BaseException as error:  # a broken runner must not take the runner with it
            outcome = _crashed(item.claimed, error, ErrorClass.SLOT_CRASHED)
        with self.lock:
            self.current = None
            if last:
                self.pending = []
        self._done(item, outcome)
        return True

    def _may_begin(self, item: InFlight, locked: bool = False) -> bool:
        """Not retired and not taken back (checked again under the lock before starting)."""
        if locked:
            return not (self.retired or item.cancelled)
        with self.lock:
            return not (self.retired or item.cancelled)

    def _prepare(self) -> BaseException | None:
        """Ready the runner; returns the error when it cannot start."""
        if self.prepare is None:
            return None
        try:
            self.prepare()
        except BaseException as error:
            return error
        return None


def _crashed(claimed: Claimed, error: BaseException, error_class: str) -> Outcome:
    try:
        message = f"{type(error).__name__}: {error}"
    except Exception:  # an exception whose __str__ itself fails
        message = type(error).__name__
    failure = Failure(error_class, message[:2000], "".join(traceback.format_exception(error)))
    logger.error(
        "handler_thread.crashed",
        job_id=claimed.job_id,
        kind=claimed.kind,
        cause=error_class,
        error=message,
    )
    return Outcome(claimed, T.FAIL, failure=failure)


def handler_thread(
    engine: Engine,
    name: str,
    lock: threading.Lock,
    done: Callable[[InFlight | None, Outcome | None], None],
    *,
    process_app: str | None,
    log_args: list[str],
    monotonic: Callable[[], float],
) -> HandlerThread:
    """A handler thread running ``engine``'s attempts in the thread itself, or, with
    ``process_app`` (the app's ``module:attribute``), in a child process it drives."""
    if process_app is None:
        return HandlerThread(
            name,
            lock,
            lambda item: run_attempt(item.claimed, engine.store, engine.now, engine.telemetry),
            done,
            monotonic=monotonic,
        )
    from engine.worker.processes import ProcessRunner

    runner = ProcessRunner(process_app, engine.url, log_args)
    return HandlerThread(
        name,
        lock,
        lambda item: runner.run(item.claimed, engine.store, engine.now, engine.telemetry),
        done,
        kill=runner.kill,
        close=runner.close,
        prepare=runner.prepare,
        monotonic=monotonic,
    )
