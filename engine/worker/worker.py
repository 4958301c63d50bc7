"""The worker: claim due jobs, run them on handler threads, commit their outcomes in batches.

One coordinator thread owns every database call of the loop (claims, started marks,
commits, lease heartbeats, rescue); handler threads only run handlers (and their ``ctx.step``
writes). Every duty is a method called from the loop, so a hung handler, a lost lease or a
database that goes away is handled in one place:

- a handler past its kind's ``timeout`` is failed (retryable) at once and its thread retired
  and replaced; in process isolation its child is killed; its late result is fenced out;
- leases of running jobs are renewed every ``lease_seconds / 3``, also while stopping;
- expired leases of other (crashed) workers are rescued every ``rescue_interval``;
- database errors are logged and retried with backoff; outcomes not yet committed are kept,
  and an outcome the database refuses for good is replaced by a permanent failure;
- stopping stops claiming, hands back claimed jobs that have not started, lets running
  handlers finish within ``grace`` seconds, then hands back the rest (attempt counted);
- with a ``heartbeat_file`` (given by the ``--processes`` supervisor), the loop touches it
  about once a second: a loop frozen by a handler that holds the GIL stops touching it, and
  the supervisor's watchdog kills the process.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from engine.claim import Batch
from engine.commit import unstorable
from engine.engine import Engine
from engine.kinds import KindConflict
from engine.metrics import GaugePublisher, Metrics
from engine.outcomes import ErrorClass, Failure, Outcome
from engine.report import TickReport
from engine.store import redact, sqlite_path
from engine.store.errors import DatabaseError, DriverError, driver_reason, is_transient
from engine.store.wakeup import DataVersionWatcher, Listener
from engine.worker.threads import HandlerThread, InFlight, handler_thread
from statecharts import T

logger = structlog.get_logger("jobcharts")

MAX_ERROR_BACKOFF = 30.0
UNHANDLED_REPORT_INTERVAL = 60.0
IDLE_CLAIM_FLOOR = 0.01  # never spin when a due job cannot be claimed
IDLE_HORIZON = 5.0  # --until-idle also waits for jobs due within this many seconds
RETENTION_DELAY = 5.0  # a starting worker prunes once it is under way
RETENTION_INTERVAL = 300.0  # then every five minutes (one worker at a time)
GAUGE_INTERVAL = 15.0  # the database's figures for the metrics' gauges
HEARTBEAT_FILE_INTERVAL = 1.0  # touches of the heartbeat file (the supervisor's watchdog)
LINGER = 0.001  # a claim after a finish waits at most this long for other short attempts
QUICK = 0.005  # ... the attempts that began at most this long ago

# I/O-bound handlers (the common case) wait on the network, not the CPU: several threads
# per process keep a slow job from idling the worker. And each loop commits the attempts
# that finished and starts one job per free thread in one transaction: with 32 threads a
# drain of short jobs shares each transaction (one fsync) among up to 32 jobs, not 8
# (docs/performance.md: 1.8x the drain at 8 on PostgreSQL, 1.2x on SQLite).
DEFAULT_THREADS = 32


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
        queues: Sequence[str] | None = None,
        heartbeat_file: str | Path | None = None,
        metrics: Metrics | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``queues``: claim only jobs of these queues (None: every queue).

        ``heartbeat_file``: touched by the loop about once a second, for a watchdog.

        ``metrics``: counted from the engine's events while the worker runs, and its
        database gauges refreshed every ``GAUGE_INTERVAL`` s (by one worker at a time).

        ``monotonic``: the clock of timeouts, heartbeats, rescue and the grace deadline
        (injectable so tests drive time instead of sleeping).
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if isolation not in ("thread", "process"):
            raise ValueError(f"isolation is 'thread' or 'process', got {isolation!r}")
        if isolation == "process" and not app_spec:
            raise ValueError("process isolation needs app_spec ('module:attribute') to import")
        self.isolation = isolation
        self._monotonic = monotonic
        self.queues = list(queues) if queues is not None else None
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
        self._lock = threading.Lock()  # shared with the runners: who started what
        self._wake = threading.Event()
        self._completed: queue.SimpleQueue[tuple[InFlight, Outcome]] = queue.SimpleQueue()
        self._in_flight: dict[int, InFlight] = {}
        self._uncommitted: list[tuple[InFlight, Outcome]] = []
        self._runners: list[HandlerThread] = []
        self._retired: list[HandlerThread] = []
        self._runner_seq = 0
        self._error_backoff = 0.0
        self._next_heartbeat = 0.0
        self.heartbeat_file = Path(heartbeat_file) if heartbeat_file is not None else None
        self.metrics = metrics
        self._gauges: GaugePublisher | None = None
        self._kinds_owned = False  # this app's kinds recorded (engine.kinds)
        self._refused: KindConflict | None = None  # a kind another app owns: stop
        self._next_beat = 0.0
        # A global limit had no room at the last claim: due jobs of it wait, so the next
        # due time says nothing; claim again when a rate slot frees or a poll passes (a
        # job ending here, or any commit on SQLite, wakes the loop sooner).
        self._held_until: float | None = None

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
        self._beat()
        self._own_kinds(at_start=True)  # a kind another app owns: refuse to start
        if self.metrics is not None:
            engine.telemetry.attach(self.metrics)
            self._gauges = GaugePublisher(engine.store, self.metrics)
        self.engine.telemetry.info(
            "worker.started",
            worker=engine.worker_id,
            kinds=list(engine.registry.kinds),
            concurrency=self.concurrency,
            isolation=self.isolation,
            queues=self.queues or "all",
            lease_seconds=engine.lease_seconds,
            db=redact(engine.url),
        )
        self._runners = [self._new_runner() for _ in range(self.concurrency)]
        listener: Listener | DataVersionWatcher | None = None
        if engine.store.dialect == "postgresql":
            listener = Listener(engine.url, self._wake.set).start()
        elif (path := sqlite_path(engine.url)) is not None:
            listener = DataVersionWatcher(path, self._wake.set).start()
        self._next_heartbeat = next_rescue = next_report = next_gauges = self._monotonic()
        next_prune = self._monotonic() + RETENTION_DELAY
        ticks = 0
        draining = False  # max_ticks reached: no more claims, finish what is in flight
        try:
            while not self.stop_event.is_set():
                self._wake.clear()
                # A claim follows: finished attempts are committed in its transaction.
                self._maintain(commit=draining or not self._idle_runner())
                now = self._monotonic()
                # Commit (and renew) what we hold before rescuing others: after an outage our
                # own leases may look expired while their outcomes wait here.
                if now >= next_rescue and not self._uncommitted and self._guarded(self._rescue):
                    next_rescue = now + self.rescue_interval
                if now >= next_report and self._guarded(self._report_unhandled):
                    next_report = now + UNHANDLED_REPORT_INTERVAL
                if engine.retention.rules and now >= next_prune:
                    self._guarded(lambda: engine.retention.run_once(engine.now()))
                    next_prune = now + RETENTION_INTERVAL
                if self._gauges is not None and now >= next_gauges:
                    self._guarded(self._refresh_gauges)
                    next_gauges = now + GAUGE_INTERVAL
                if draining and not self._busy():
                    break
                claimed: int | None = None
                if not draining and self._idle_runner():
                    if max_ticks is not None and ticks >= max_ticks:
                        draining = True
                        continue
                    ticks += 1
                    result = self._guarded(self._claim_and_dispatch)
                    claimed = result if isinstance(result, int) else 0
                    if until_idle and claimed == 0 and self._idle_now():
                        break
                if not claimed:
                    pause = self._pause(next_rescue)
                    if claimed == 0:
                        pause = max(pause, IDLE_CLAIM_FLOOR)
                    self._wake.wait(pause)
        finally:
            self._shutdown()
            if listener is not None:
                listener.stop()
            if self.metrics is not None:
                engine.telemetry.detach(self.metrics)
            if self._gauges is not None:
                self._gauges.close()
            self.engine.telemetry.info(
                "worker.stopped", worker=engine.worker_id, **vars(self.totals)
            )
        if self._refused is not None:
            raise self._refused
        return self.totals

    def _own_kinds(self, *, at_start: bool = False) -> None:
        """Record this app's kinds and chart versions (engine.kinds): a kind recorded
        otherwise, with jobs in flight the new payload model would not take, stops the
        worker. With the database away at start, it is done at the next report instead."""
        if self._kinds_owned:
            return
        try:
            self.engine.own_kinds()
            self.engine.record_versions()
        except KindConflict as error:
            if at_start:
                raise
            self._refused = error
            self.stop()
            return
        except DatabaseError as error:
            if not at_start:
                raise
            self.engine.telemetry.warning(
                "worker.kinds_unchecked", error=str(getattr(error, "orig", None) or error)
            )
            return
        self._kinds_owned = True

    def _idle_runner(self) -> bool:
        return any(runner.idle for runner in self._runners)

    def _maintain(self, *, commit: bool = True) -> None:
        """The duties that keep running attempts safe: commit (unless the claim about to
        follow commits in its own transaction), timeouts, runners, heartbeat."""
        if commit:
            self._guarded(self._commit_completed)
        self._guarded(self._enforce_timeouts)
        self._guarded(self._replace_dead_runners)
        if self._monotonic() >= self._next_heartbeat and self._guarded(self._heartbeat):
            self._next_heartbeat = self._monotonic() + self.heartbeat_interval

    def _busy(self) -> bool:
        return bool(self._in_flight or self._uncommitted or not self._completed.empty())

    def _idle_now(self) -> bool:
        """Nothing in flight here, no job of ours held by any worker, and none due within
        ``IDLE_HORIZON`` seconds.

        A job held by a worker that died counts as busy until its lease expires and rescue
        hands it on, and a retry about to fall due (a failed or just rescued attempt's
        backoff) is waited for, so ``until_idle`` really drains the queue.
        """
        if self._busy():
            return False
        try:
            engine = self.engine
            soon = engine.now() + timedelta(seconds=IDLE_HORIZON)
            return engine.store.job_count_active(engine.registry.claimable, soon, self.queues) == 0
        except DatabaseError:
            return False

    # -- duties (each called from the coordinator loop) --------------------------------------

    def _claim_and_dispatch(self) -> int:
        """Claim one job per free handler thread and hand them over at once.

        Claims are sized to the free threads: no job waits here behind a slow one while
        another thread or worker process could run it. Each claimed job starts as the claim
        commits, so the claim records the start itself (one transaction, not two); the
        attempts finished since the last claim are committed in that same transaction.
        """
        engine = self.engine
        self._gather_quick_finishes()
        idle = [runner for runner in self._runners if runner.idle]
        limit = min(self.batch_size, len(idle))
        # The tick's own step: due cron/poller slots become jobs, then the claim.
        self._collect_completed()
        now = engine.now()
        if not self._uncommitted:
            batch = engine.claim_due(now, limit, queues=self.queues, start=True)
        else:
            joined = self._commit_and_claim(now, limit)
            if joined is None:  # failed: commit alone, then claim alone
                self._commit_completed()
                batch = engine.claim_due(now, limit, queues=self.queues, start=True)
            else:
                report, batch = joined
                self._committed(report)
        self.totals.timed += batch.timed
        self._held_until = None
        if batch.held:
            wait = self.poll_interval
            if batch.free_at is not None:
                wait = min(wait, max((batch.free_at - now).total_seconds(), 0.0))
            self._held_until = self._monotonic() + wait
        if not batch.jobs:
            return batch.timed
        self.totals.claimed += len(batch.jobs)
        for runner, claimed in zip(idle, batch.jobs, strict=False):
            item = InFlight(claimed, batch)
            self._in_flight[claimed.job_id] = item
            runner.give([item])
        return len(batch.jobs)

    def _gather_quick_finishes(self) -> None:
        """Before committing what finished, wait up to ``LINGER`` s for the attempts that
        began within ``QUICK`` s: short jobs finish together, so their outcomes share one
        transaction and their threads one claim (half the transactions of a drain of
        short jobs). A longer attempt is never waited for, nor is anything when nothing
        has finished (an idle worker's claim, the latency path)."""
        if self._completed.empty():
            return
        until = time.monotonic() + LINGER
        while (remaining := until - time.monotonic()) > 0 and self._quick_running():
            self._wake.wait(remaining)
            self._wake.clear()

    def _quick_running(self) -> bool:
        """A runner holds an attempt that has not begun or began within ``QUICK`` s."""
        now = self._monotonic()
        for runner in self._runners:
            item = runner.current
            if runner.pending and item is None:
                return True  # handed over, not begun yet
            if item is not None and item.started is not None and now - item.started < QUICK:
                return True
        return False

    def _commit_and_claim(self, now: datetime, limit: int) -> tuple[TickReport, Batch] | None:
        """Commit the finished attempts and claim the next jobs in one transaction (one
        BEGIN and COMMIT, one fsync on SQLite). Its events are told once it has committed.
        None: it failed, and nothing of it happened; the caller commits alone (with its
        own handling of refused outcomes) and claims alone, so a claim that keeps failing
        never holds back the commit of work already done."""
        engine = self.engine
        try:
            with engine.telemetry.held(), engine.store.one_transaction():
                report = engine.commit([outcome for _, outcome in self._uncommitted], now)
                batch = engine.claim_due(now, limit, queues=self.queues, start=True)
        except Exception:
            return None
        return report, batch

    def _collect_completed(self) -> None:
        """Take the runners' results: void ones are dropped, the rest wait for a commit."""
        while True:
            try:
                item, outcome = self._completed.get_nowait()
            except queue.Empty:
                break
            if item.abandoned:  # timed out, lease lost or handed back: its result is void
                self._drop_late(item, outcome)
            else:
                self._uncommitted.append((item, outcome))

    def _commit_completed(self) -> None:
        self._collect_completed()
        if not self._uncommitted:
            return
        now = self.engine.now()
        try:
            report = self.engine.commit([outcome for _, outcome in self._uncommitted], now)
        except DriverError as error:
            if is_transient(error):
                raise  # kept in _uncommitted; committed once the database is back
            report = self._commit_one_by_one(now)
        self._committed(report)

    def _committed(self, report: TickReport) -> None:
        """The outcomes in ``_uncommitted`` are stored: stop tracking their attempts."""
        for item, _ in self._uncommitted:
            self._forget(item)
        self._uncommitted = []
        report.claimed = 0
        self.totals.add(report)

    def _commit_one_by_one(self, now: Any) -> TickReport:
        """The batch was refused for good: commit each outcome alone, replacing any the
        database will not store (say a NUL byte in a PostgreSQL text) by a permanent failure.
        """
        report = TickReport()
        for _, outcome in self._uncommitted:
            try:
                report.add(self.engine.commit([outcome], now))
                continue
            except DriverError as error:
                if is_transient(error):
                    raise
                reason = driver_reason(error)[:500]
            replacement = unstorable(self.engine, outcome, reason)
            try:
                report.add(self.engine.commit([replacement], now))
            except DriverError as error:
                if is_transient(error):
                    raise
                # Not even that: forget it; its lease expires and rescue counts the attempt.
                self.engine.telemetry.error("attempt.uncommittable", job_id=outcome.claimed.job_id)
        return report

    def _forget(self, item: InFlight) -> None:
        """Stop tracking ``item``'s attempt (never a later attempt of the same job)."""
        current = self._in_flight.get(item.claimed.job_id)
        if current is not None and current.claimed is item.claimed:
            del self._in_flight[item.claimed.job_id]

    def _drop_late(self, item: InFlight, outcome: Outcome) -> None:
        self._forget(item)
        self.totals.fenced += 1  # a discarded result (its timeout counted as the attempt)
        self.engine.telemetry.warning(
            "attempt.fenced_out",
            job_id=item.claimed.job_id,
            kind=item.claimed.kind,
            attempt=item.claimed.attempt,
            reason=(
                "the handler returned after its timeout"
                if item.timed_out
                else "the attempt lost its lease or was handed back before it returned"
            ),
            outcome=outcome.trigger,
        )

    def _enforce_timeouts(self) -> None:
        now = self._monotonic()
        for runner in [*self._runners, *self._retired]:
            with self._lock:
                item = runner.current
                if item is None or item.started is None:
                    continue
                timeout = item.claimed.timeout
                if now - item.started < timeout:
                    continue
            if not item.abandoned:
                # Commit the timeout in place of the handler's result: a stand-in entry,
                # because the real one is abandoned and dropped whenever it returns.
                failure = Failure(
                    ErrorClass.HANDLER_TIMEOUT,
                    f"the handler ran longer than its timeout of {timeout:g}s; its result, "
                    "if it ever returns, is discarded",
                )
                stand_in = Outcome(
                    item.claimed, T.FAIL, failure=failure, duration=now - item.started
                )
                self._uncommitted.append((InFlight(item.claimed, item.batch), stand_in))
                item.timed_out = True
                self.engine.telemetry.warning(
                    "attempt.timed_out",
                    job_id=item.claimed.job_id,
                    kind=item.claimed.kind,
                    attempt=item.claimed.attempt,
                    timeout=timeout,
                )
            item.abandoned = True
            self._retire(runner, item)

    def _retire(self, runner: HandlerThread, running: InFlight | None = None) -> None:
        """Replace a runner whose handler cannot be trusted to return: kill it if possible,
        hand back what was queued behind it, start a fresh runner in its place.

        With ``running``, only while that attempt is still the runner's current one.
        """
        if runner not in self._runners:
            return
        taken = runner.retire(running)
        if taken is None:
            return  # it returned meanwhile; its (abandoned) result will be dropped
        self._runners.remove(runner)
        self._runners.append(self._new_runner())
        if runner.kill is not None:
            runner.kill()  # a process: really stopped
        else:
            self._retired.append(runner)  # a thread: it exits when its handler returns
        self._hand_back(taken, started=False)

    def _replace_dead_runners(self) -> None:
        for runner in list(self._runners):
            if not runner.thread.is_alive():
                self.engine.telemetry.error("handler_thread.died", thread=runner.thread.name)
                current = runner.current
                if current is not None:
                    current.abandoned = True
                    self._forget(current)  # its lease expires; rescue counts the attempt
                self._retire(runner)
        self._retired = [runner for runner in self._retired if runner.thread.is_alive()]

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
                    self._lease_lost(item)

    def _lease_lost(self, item: InFlight) -> None:
        """Rescued elsewhere: whatever this attempt returns is void; stop it if we can."""
        item.abandoned = True
        self.engine.telemetry.warning(
            "attempt.lease_lost",
            job_id=item.claimed.job_id,
            kind=item.claimed.kind,
            attempt=item.claimed.attempt,
        )
        for runner in list(self._runners):
            if runner.current is item and runner.kill is not None:
                self._retire(runner, item)

    def _rescue(self) -> None:
        report = self.engine.rescue(self.engine.now(), exclude=list(self._in_flight))
        report.claimed = 0
        self.totals.add(report)

    def _refresh_gauges(self) -> None:
        """The metrics' database figures (jobs per kind and state, oldest due job)."""
        if self._gauges is not None:
            self._gauges.refresh(self.engine.now())

    def _report_unhandled(self) -> None:
        """Due jobs of kinds this worker has no handler for are left alone, and reported;
        strays are swept (engine.strays): migrated, set aside, or reported stranded."""
        self._own_kinds()
        self.engine.sweep_strays()
        waiting = self.engine.store.job_waiting_by_kind(self.engine.now())
        unhandled = {k: n for k, n in waiting.items() if k not in self.engine.registry.kinds}
        if unhandled:
            self.engine.telemetry.warning(
                "jobs.unhandled_kinds",
                waiting=unhandled,
                hint="no handler here: run a worker whose --app registers these kinds",
            )

    # -- shutdown --------------------------------------------------------------------------

    def _shutdown(self) -> None:
        """Hand back unstarted jobs now, wait ``grace`` for running ones, hand back the rest.

        Reached with work in flight only when a stop was requested (or the loop failed).
        Leases are renewed and timeouts enforced while waiting.
        """
        try:
            with self._lock:
                unstarted = []
                for item in self._in_flight.values():
                    if item.started is None and not item.cancelled:
                        item.cancelled = True
                        unstarted.append(item)
            self._hand_back(unstarted, started=False)
            deadline = self._monotonic() + self.grace
            while self._running() and self._monotonic() < deadline:
                self._wake.wait(min(0.05, max(deadline - self._monotonic(), 0)))
                self._wake.clear()
                self._maintain()
            self._guarded(self._commit_completed)
            running = self._running()
            for item in running:
                item.abandoned = True
            for runner in list(self._runners):
                if runner.current in running and runner.kill is not None:
                    runner.kill()  # no handler process outlives its worker
            self._hand_back(running, started=True)
            for _ in range(20):  # outcomes that could not be committed yet: keep trying
                if not self._uncommitted and self._completed.empty():
                    break
                if not self._guarded(self._commit_completed):
                    time.sleep(0.1)
        except Exception as error:
            self.engine.telemetry.error("worker.shutdown_failed", error=repr(error))
        finally:
            for runner in [*self._runners, *self._retired]:
                runner.inbox.put(None)

    def _running(self) -> list[InFlight]:
        """Dispatched attempts not yet finished (queued in a wave counts too)."""
        finished = {id(item.claimed) for item, _ in self._uncommitted}
        return [
            item
            for item in self._in_flight.values()
            if not item.abandoned and not item.cancelled and id(item.claimed) not in finished
        ]

    def _hand_back(self, items: list[InFlight], *, started: bool) -> None:
        if not items:
            return
        for item in items:
            self._forget(item)
        try:
            report = self.engine.hand_back(
                [i.claimed for i in items], started=started, now=self.engine.now()
            )
        except Exception as error:
            self.engine.telemetry.warning(
                "worker.hand_back_failed", error=repr(error), jobs=len(items)
            )
            return  # their leases expire and rescue hands them on
        self.totals.add(report)
        self.engine.telemetry.info(
            "worker.handed_back", jobs=report.released + report.expired, started=started
        )

    # -- helpers ---------------------------------------------------------------------------

    def _new_runner(self) -> HandlerThread:
        self._runner_seq += 1
        engine = self.engine

        def done(item: InFlight | None, outcome: Outcome | None) -> None:
            if item is not None and outcome is not None:
                self._completed.put((item, outcome))
            self._wake.set()

        return handler_thread(
            engine,
            f"jobcharts-handler-{self._runner_seq}",
            self._lock,
            done,
            process_app=self.app_spec if self.isolation == "process" else None,
            log_args=self.log_args,
            monotonic=self._monotonic,
        )

    def _beat(self) -> None:
        """Touch the heartbeat file, at most once a ``HEARTBEAT_FILE_INTERVAL``.

        Called before every duty and while backing off: only a loop that no longer comes
        round (frozen by the GIL, or stuck in one call) stops it. Real time, not the
        injectable clock: the watchdog watching it is another process.
        """
        if self.heartbeat_file is None or time.monotonic() < self._next_beat:
            return
        self._next_beat = time.monotonic() + HEARTBEAT_FILE_INTERVAL
        with contextlib.suppress(OSError):  # a missing beat is the watchdog's to judge
            self.heartbeat_file.touch()

    def _back_off(self) -> None:
        """Wait the error backoff (cut short by stop()), beating meanwhile."""
        deadline = time.monotonic() + self._error_backoff
        while (left := deadline - time.monotonic()) > 0 and not self.stop_event.is_set():
            self._beat()
            self.stop_event.wait(min(left, HEARTBEAT_FILE_INTERVAL))

    def _guarded(self, duty: Callable[[], Any]) -> Any:
        """Run a duty; on an error log it, back off, and report failure (never raise)."""
        self._beat()
        try:
            result = duty()
        except DatabaseError as error:  # the database, or the pool waiting for it
            self._error_backoff = min(max(self._error_backoff * 2, 0.1), MAX_ERROR_BACKOFF)
            self.engine.telemetry.warning(
                "worker.db_error",
                duty=getattr(duty, "__name__", "?").lstrip("_"),
                error=str(getattr(error, "orig", None) or error),
                retry_in=self._error_backoff,
            )
            self._back_off()
            return False
        except Exception as error:  # a bug or a broken chart: keep the other duties alive
            self._error_backoff = min(max(self._error_backoff * 2, 0.1), MAX_ERROR_BACKOFF)
            logger.exception(
                "worker.duty_failed",
                duty=getattr(duty, "__name__", "?").lstrip("_"),
                error=repr(error),
            )
            self._back_off()
            return False
        self._error_backoff = 0.0
        return True if result is None else result

    def _pause(self, next_rescue: float) -> float:
        """How long the coordinator may sleep before it has something to do."""
        now = self._monotonic()
        deadlines = [self._next_heartbeat - now, next_rescue - now, self.poll_interval]
        if self.heartbeat_file is not None:
            deadlines.append(HEARTBEAT_FILE_INTERVAL)
        with self._lock:
            running = [s.current for s in self._runners if s.current is not None]
        for item in running:
            if item.started is not None and not item.abandoned:
                deadlines.append(item.started + item.claimed.timeout - now)
        if self._held_until is not None and self._held_until > now:
            deadlines.append(self._held_until - now)
        elif any(runner.idle for runner in self._runners):
            with contextlib.suppress(DatabaseError):  # a pool timeout included
                deadlines.append(self.engine.sleep_for(self.poll_interval))
        return max(min(deadlines), 0.0)
