"""The worker: claim due jobs, run them on handler slots, commit their outcomes in batches.

One coordinator thread owns every database call of the loop (claims, started marks,
commits, lease heartbeats, rescue); handler slots only run handlers (and their ``ctx.step``
writes). Every duty is a method called from the loop, so a hung handler, a lost lease or a
database that goes away is handled in one place:

- a handler past its kind's ``timeout`` is failed (retryable) at once and its slot replaced;
  its late result is fenced out by the lease;
- leases of running jobs are renewed every ``lease_seconds / 3``;
- expired leases of other (crashed) workers are rescued every ``rescue_interval``;
- database errors are logged and retried with backoff; outcomes not yet committed are kept;
- stopping stops claiming, hands back claimed jobs that have not started, lets running
  handlers finish within ``grace`` seconds, then hands back the rest (attempt counted).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.exc import DBAPIError

from engine.core import Batch, Engine, TickReport
from engine.effects import Failure
from engine.runner import Claimed, Outcome, run_attempt
from statecharts import T

logger = structlog.get_logger("jobcharts")

MAX_ERROR_BACKOFF = 30.0
HANDLER_TIMEOUT = "HandlerTimeout"
WAVE_TARGET_SECONDS = 0.01  # a wave should take about 25x one started-mark transaction
MAX_WAVE = 64
UNHANDLED_REPORT_INTERVAL = 60.0


@dataclass(eq=False)
class InFlight:
    """One claimed attempt from dispatch until its outcome is committed."""

    claimed: Claimed
    batch: Batch
    lock: threading.Lock = field(default_factory=threading.Lock)
    started: float | None = None  # monotonic time the handler began
    cancelled: bool = False  # handed back before it started
    abandoned: bool = False  # timed out or handed back while running: drop its result

    def begin(self) -> bool:
        """Called by the slot: start unless the coordinator took the job back."""
        with self.lock:
            if self.cancelled:
                return False
            self.started = time.monotonic()
            return True

    def take_back(self) -> bool:
        """Called by the coordinator: cancel if not started yet; True when cancelled."""
        with self.lock:
            if self.started is None:
                self.cancelled = True
            return self.cancelled


class Slot:
    """A handler thread that runs the waves of jobs it is given, one job at a time."""

    def __init__(
        self,
        name: str,
        run: Callable[[InFlight], Outcome],
        done: Callable[..., None],
        kill: Callable[[], None] | None = None,
        close: Callable[[], None] | None = None,
        prepare: Callable[[], None] | None = None,
    ):
        self.inbox: queue.SimpleQueue[list[InFlight] | None] = queue.SimpleQueue()
        self.kill = kill  # set when the handler can really be stopped (process isolation)
        self.close = close
        self.prepare = prepare  # runs before each attempt's timeout clock starts
        self.current: InFlight | None = None
        self.pending: list[InFlight] = []
        self.retired = False
        self._run = run
        self._done = done
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    @property
    def idle(self) -> bool:
        return self.current is None and not self.pending and not self.retired

    def give(self, wave: list[InFlight]) -> None:
        self.pending = list(wave)
        self.inbox.put(wave)

    def _loop(self) -> None:
        while True:
            wave = self.inbox.get()
            if wave is None:
                if self.close is not None:
                    self.close()
                return
            for item in wave:
                if self.prepare is not None:
                    self.prepare()
                if not item.begin():
                    continue
                self.current = item
                outcome = self._run(item)
                self.current = None
                self._done(item, outcome)
            self.pending = []
            self._done(None, None)  # wake the coordinator: this slot is idle


class Worker:
    """Runs an engine's jobs until stopped; see the module docstring for the duties."""

    def __init__(
        self,
        engine: Engine,
        *,
        concurrency: int = 1,
        poll_interval: float = 1.0,
        batch_size: int | None = None,
        grace: float = 30.0,
        rescue_interval: float | None = None,
        isolation: str = "thread",
        app_spec: str | None = None,
        log_args: list[str] | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if isolation not in ("thread", "process"):
            raise ValueError(f"isolation is 'thread' or 'process', got {isolation!r}")
        if isolation == "process" and not app_spec:
            raise ValueError("process isolation needs app_spec ('module:attribute') to import")
        self.isolation = isolation
        self.app_spec = app_spec
        self.log_args = log_args or []
        self.engine = engine
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.batch_size = batch_size or max(engine.batch_size, concurrency)
        self.grace = grace
        self.heartbeat_interval = engine.lease_seconds / 3
        self.rescue_interval = rescue_interval or min(engine.lease_seconds / 2, 5.0)
        self.stop_event = threading.Event()
        self.totals = TickReport()
        self._wake = threading.Event()
        self._completed: queue.SimpleQueue[tuple[InFlight, Outcome]] = queue.SimpleQueue()
        self._in_flight: dict[int, InFlight] = {}
        self._uncommitted: list[tuple[InFlight, Outcome]] = []
        self._slots: list[Slot] = []
        self._slot_seq = 0
        self._avg_duration = 0.005
        self._error_backoff = 0.0

    # -- control ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; running handlers finish (within ``grace``), then run() returns."""
        self.stop_event.set()
        self._wake.set()

    def run(self, *, max_ticks: int | None = None, until_idle: bool = False) -> TickReport:
        """Loop until stopped; returns what was done in all.

        ``max_ticks``: stop after that many claim attempts. ``until_idle``: stop once nothing
        runs and nothing is due now. Both finish the jobs already dispatched; a stop()
        hands back the ones that have not started.
        """
        engine = self.engine
        logger.info(
            "worker.started",
            worker=engine.worker_id,
            kinds=list(engine.registry.kinds),
            concurrency=self.concurrency,
            lease_seconds=engine.lease_seconds,
            db=_redact(engine.url),
        )
        self._slots = [self._new_slot() for _ in range(self.concurrency)]
        listener = None
        if engine.store.dialect == "postgresql":
            from engine.wakeup import Listener

            listener = Listener(engine.store, self._wake.set).start()
        next_heartbeat = next_rescue = next_report = time.monotonic()
        ticks = 0
        draining = False  # max_ticks reached: no more claims, finish what is in flight
        try:
            while not self.stop_event.is_set():
                self._wake.clear()
                if not self._guarded(self._commit_completed):
                    continue
                self._enforce_timeouts()
                now = time.monotonic()
                if now >= next_heartbeat and self._guarded(self._heartbeat):
                    next_heartbeat = now + self.heartbeat_interval
                if now >= next_rescue and self._guarded(self._rescue):
                    next_rescue = now + self.rescue_interval
                if now >= next_report and self._guarded(self._report_unhandled):
                    next_report = now + UNHANDLED_REPORT_INTERVAL
                if draining and not self._busy():
                    break
                claimed = 0
                if not draining and any(slot.idle for slot in self._slots):
                    if max_ticks is not None and ticks >= max_ticks:
                        draining = True
                        continue
                    ticks += 1
                    result = self._guarded(self._claim_and_dispatch)
                    claimed = result if isinstance(result, int) else 0
                    if until_idle and claimed == 0 and self._idle_now():
                        break
                if claimed == 0:
                    self._wake.wait(self._pause(next_heartbeat, next_rescue))
        finally:
            self._shutdown()
            if listener is not None:
                listener.stop()
            logger.info("worker.stopped", worker=engine.worker_id, **vars(self.totals))
        return self.totals

    def _busy(self) -> bool:
        return bool(self._in_flight or self._uncommitted or not self._completed.empty())

    def _idle_now(self) -> bool:
        """Nothing in flight here, and no job of ours due now or held by any worker.

        A job held by a worker that died counts as busy until its lease expires and rescue
        hands it on, so ``until_idle`` really drains the queue.
        """
        if self._busy():
            return False
        try:
            return (
                self.engine.store.job_count_active(self.engine.registry.kinds, self.engine.now())
                == 0
            )
        except DBAPIError:
            return False

    # -- duties (each called from the coordinator loop) --------------------------------------

    def _claim_and_dispatch(self) -> int:
        idle = [slot for slot in self._slots if slot.idle]
        wave = max(1, min(MAX_WAVE, int(WAVE_TARGET_SECONDS / max(self._avg_duration, 1e-6))))
        limit = min(self.batch_size, len(idle) * wave)
        engine = self.engine
        batch = engine.claim(engine.now(), limit)
        if not batch.jobs:
            return 0
        self.totals.claimed += len(batch.jobs)
        # A job whose started mark fails (lease lost, database error) is not run; its lease
        # expires and rescue releases it without counting an attempt.
        started = engine.start(batch, batch.jobs, engine.now())
        items = [InFlight(claimed, batch) for claimed in started]
        for item in items:
            self._in_flight[item.claimed.job_id] = item
        per_slot = -(-len(items) // len(idle))  # ceiling division: spread over idle slots
        for index, slot in enumerate(idle):
            chunk = items[index * per_slot : (index + 1) * per_slot]
            if chunk:
                slot.give(chunk)
        return len(batch.jobs)

    def _commit_completed(self) -> None:
        while True:
            try:
                item, outcome = self._completed.get_nowait()
            except queue.Empty:
                break
            if item.abandoned:  # timed out or handed back: its result must not count
                self._drop_late(item, outcome)
            else:
                self._uncommitted.append((item, outcome))
        if not self._uncommitted:
            return
        # Kept until the commit succeeds: a database error here loses nothing.
        report = self.engine.commit(
            [outcome for _, outcome in self._uncommitted], self.engine.now()
        )
        for item, outcome in self._uncommitted:
            self._forget(item)
            self._avg_duration = 0.9 * self._avg_duration + 0.1 * outcome.duration
        self._uncommitted = []
        report.claimed = 0
        self.totals.add(report)

    def _forget(self, item: InFlight) -> None:
        """Stop tracking ``item``'s attempt (never a later attempt of the same job)."""
        current = self._in_flight.get(item.claimed.job_id)
        if current is not None and current.claimed is item.claimed:
            del self._in_flight[item.claimed.job_id]

    def _drop_late(self, item: InFlight, outcome: Outcome) -> None:
        self.totals.fenced += 1
        self._forget(item)
        logger.warning(
            "attempt.fenced_out",
            job_id=item.claimed.job_id,
            kind=item.claimed.kind,
            attempt=item.claimed.attempt,
            reason="the attempt timed out, lost its lease or was handed back before it returned",
            outcome=outcome.trigger,
        )

    def _enforce_timeouts(self) -> None:
        now = time.monotonic()
        for slot in list(self._slots):
            item = slot.current
            if item is None or item.started is None or item.abandoned:
                continue
            timeout = item.claimed.spec.timeout
            if now - item.started < timeout:
                continue
            item.abandoned = True
            failure = Failure(
                HANDLER_TIMEOUT,
                f"the handler ran longer than its timeout of {timeout:g}s; its result, if it "
                "ever returns, is discarded",
            )
            outcome = Outcome(item.claimed, T.FAIL, failure=failure, duration=now - item.started)
            # Committed in place of the handler's result: a stand-in entry, because the real
            # one is marked abandoned and whatever the handler returns later is dropped.
            self._uncommitted.append((InFlight(item.claimed, item.batch), outcome))
            logger.warning(
                "attempt.timed_out",
                job_id=item.claimed.job_id,
                kind=item.claimed.kind,
                attempt=item.claimed.attempt,
                timeout=timeout,
            )
            # A thread cannot be killed: retire it (it exits once the handler returns). A
            # handler process is killed now. Either way, hand back the jobs queued behind
            # it and start a fresh slot in its place.
            if slot.kill is not None:
                slot.kill()
            slot.retired = True
            self._slots.remove(slot)
            queued = [p for p in slot.pending if p is not item and p.take_back()]
            self._hand_back(queued, started=False)
            self._slots.append(self._new_slot())

    def _heartbeat(self) -> None:
        by_batch: dict[str, list[InFlight]] = {}
        for item in self._in_flight.values():
            if not item.abandoned:
                by_batch.setdefault(item.batch.token, []).append(item)
        now = self.engine.now()
        for token, items in by_batch.items():
            held = self.engine.renew(token, [i.claimed.job_id for i in items], now)
            for item in items:
                if item.claimed.job_id not in held:
                    item.abandoned = True  # rescued elsewhere: whatever it returns is fenced
                    logger.warning(
                        "attempt.lease_lost",
                        job_id=item.claimed.job_id,
                        kind=item.claimed.kind,
                        attempt=item.claimed.attempt,
                    )

    def _rescue(self) -> None:
        report = self.engine.rescue(self.engine.now())
        report.claimed = 0
        self.totals.add(report)

    def _report_unhandled(self) -> None:
        """Due jobs of kinds this worker has no handler for are left alone, and reported."""
        waiting = self.engine.store.job_waiting_by_kind(self.engine.now())
        unhandled = {k: n for k, n in waiting.items() if k not in self.engine.registry.kinds}
        if unhandled:
            logger.warning(
                "jobs.unhandled_kinds",
                waiting=unhandled,
                hint="no handler here: run a worker whose --app registers these kinds",
            )

    # -- shutdown --------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Hand back unstarted jobs now, wait ``grace`` for running ones, hand back the rest.

        Reached with work in flight only when a stop was requested (or the loop failed).
        """
        unstarted = [
            item
            for item in list(self._in_flight.values())
            if item.started is None and not item.cancelled and item.take_back()
        ]
        self._hand_back(unstarted, started=False)
        deadline = time.monotonic() + self.grace
        while self._running() and time.monotonic() < deadline:
            self._wake.wait(min(0.05, max(deadline - time.monotonic(), 0)))
            self._wake.clear()
            self._guarded(self._commit_completed)
        self._guarded(self._commit_completed)
        stuck = self._running()
        never = [item for item in stuck if item.take_back()]
        self._hand_back(never, started=False)
        running = [item for item in stuck if not item.cancelled]
        for item in running:
            item.abandoned = True
        self._hand_back(running, started=True)
        for _ in range(20):  # outcomes that could not be committed yet: keep trying briefly
            if not self._uncommitted and self._completed.empty():
                break
            if not self._guarded(self._commit_completed):
                time.sleep(0.1)
        for slot in self._slots:
            slot.inbox.put(None)

    def _running(self) -> list[InFlight]:
        """Dispatched attempts not yet finished (queued in a wave counts too)."""
        finished = {item.claimed.job_id for item, _ in self._uncommitted}
        return [
            item
            for item in self._in_flight.values()
            if not item.abandoned and not item.cancelled and item.claimed.job_id not in finished
        ]

    def _hand_back(self, items: list[InFlight], *, started: bool) -> None:
        if not items:
            return
        for item in items:
            self._forget(item)
        try:
            moved = self.engine.hand_back(
                [i.claimed for i in items], started=started, now=self.engine.now()
            )
        except DBAPIError as error:
            logger.warning("worker.hand_back_failed", error=str(error.orig), jobs=len(items))
            return  # their leases expire and rescue hands them on
        if started:
            self.totals.expired += moved
        else:
            self.totals.released += moved
        logger.info("worker.handed_back", jobs=moved, started=started)

    # -- helpers ---------------------------------------------------------------------------

    def _new_slot(self) -> Slot:
        self._slot_seq += 1
        engine = self.engine

        def done(item: InFlight | None, outcome: Outcome | None) -> None:
            if item is not None and outcome is not None:
                self._completed.put((item, outcome))
            self._wake.set()

        name = f"jobcharts-slot-{self._slot_seq}"
        if self.isolation == "process":
            from engine.procslot import ProcessRunner

            assert self.app_spec is not None
            runner = ProcessRunner(self.app_spec, engine.url, self.log_args)
            return Slot(
                name,
                lambda item: runner.run(item.claimed, engine.store, engine.now),
                done,
                kill=runner.kill,
                close=runner.close,
                prepare=runner.prepare,
            )
        return Slot(name, lambda item: run_attempt(item.claimed, engine.store, engine.now), done)

    def _guarded(self, duty: Callable[[], Any]) -> Any:
        """Run a database duty; on a database error log it, back off, and report failure."""
        try:
            result = duty()
        except DBAPIError as error:
            self._error_backoff = min(max(self._error_backoff * 2, 0.1), MAX_ERROR_BACKOFF)
            logger.warning(
                "worker.db_error",
                duty=getattr(duty, "__name__", "?").lstrip("_"),
                error=str(error.orig),
                retry_in=self._error_backoff,
            )
            self.stop_event.wait(self._error_backoff)
            return False
        self._error_backoff = 0.0
        return True if result is None else result

    def _pause(self, next_heartbeat: float, next_rescue: float) -> float:
        """How long the coordinator may sleep before it has something to do."""
        now = time.monotonic()
        deadlines = [next_heartbeat - now, next_rescue - now, self.poll_interval]
        for slot in self._slots:
            item = slot.current
            if item is not None and item.started is not None:
                deadlines.append(item.started + item.claimed.spec.timeout - now)
        if any(slot.idle for slot in self._slots):
            with contextlib.suppress(DBAPIError):
                deadlines.append(self.engine.sleep_for(self.poll_interval))
        return max(min(deadlines), 0.0)


def _redact(url: str) -> str:
    """A database URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
