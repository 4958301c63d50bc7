"""Bad conditions on real SQLite files: a locked database, unknown kinds, corrupt rows,
handlers that exit, kill their process or hang, shutdowns, many processes, lease takeovers.

Each test names, in a comment, the handling it checks: removing that handling makes it fail.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import BaseModel
from structlog.testing import capture_logs

from engine import Engine, FrozenClock, JobContext, RetryPolicy
from engine.attempt import run_attempt
from engine.outcomes import Outcome
from engine.store.rows import CorruptJSON
from engine.worker import Worker
from statecharts import T
from tests.engine import crash_app

ROOT = Path(__file__).resolve().parents[2]
CRASH_APP = "tests.engine.crash_app:engine"
QUICK_RETRIES = RetryPolicy(max_attempts=3, base=0, jitter=0)


class Item(BaseModel):
    n: int


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo what a test may leave behind: JOBCHARTS_* variables, signal handlers, structlog."""
    monkeypatch.delenv("JOBCHARTS_DB", raising=False)
    monkeypatch.delenv("JOBCHARTS_APP", raising=False)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    structlog.reset_defaults()
    yield
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    structlog.reset_defaults()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "bad.db"


@pytest.fixture
def url(db_url: str) -> str:
    """Most bad conditions are checked on both backends."""
    return db_url


class Calls:
    """Handler calls per job id (and in all), counted thread-safely."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.per_job: Counter[int] = Counter()
        self.total = 0

    def enter(self, job_id: int) -> int:
        """Count one call; returns the running total (1 for the very first call)."""
        with self.lock:
            self.per_job[job_id] += 1
            self.total += 1
            return self.total


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def run_in_thread(worker: Worker, **kw: Any) -> tuple[threading.Thread, list[Any]]:
    """Start ``worker.run`` on a thread; the returned list receives its report."""
    reports: list[Any] = []
    thread = threading.Thread(target=lambda: reports.append(worker.run(**kw)), daemon=True)
    thread.start()
    return thread, reports


def stop_and_join(worker: Worker, thread: threading.Thread, timeout: float = 10.0) -> None:
    worker.stop()
    thread.join(timeout=timeout)
    assert not thread.is_alive(), "Worker.run did not return after stop()"


def triggers(engine: Engine, job_id: int) -> list[str]:
    return [event.trigger for event in engine.get(job_id).history]


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in list(logs) if entry["event"] == name]


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHARTS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def jobcharts_command() -> list[str]:
    """The ``jobcharts`` console script of this interpreter (or ``python -m engine.cli``)."""
    script = Path(sys.executable).parent / "jobcharts"
    return [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli"]


# -- 1. the database is locked mid-run ------------------------------------------------------


def test_database_locked_mid_run_is_retried_and_nothing_is_lost(
    sqlite_only: None, db_path: Path
) -> None:
    """A 1.5 s exclusive lock mid-run is logged and outlasted; every job succeeds exactly once."""
    url = f"sqlite:///{db_path}"
    # Checks Worker._guarded (database errors are logged as worker.db_error and retried with
    # backoff) and the worker keeping outcomes until their commit (alone or in the claim's
    # transaction) succeeds. Without
    # the first the worker thread dies on "database is locked" and jobs stay unfinished;
    # without the second the locked-out outcomes are lost, their leases expire and they run
    # again (or never finish).
    engine = Engine(url, busy_timeout=0.2, lease_seconds=1.0)
    calls = Calls()
    locked, unlocked = threading.Event(), threading.Event()

    def hold_exclusive_lock() -> None:
        conn = sqlite3.connect(db_path, timeout=10, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            locked.set()
            time.sleep(1.5)
            conn.execute("COMMIT")
        finally:
            conn.close()
            unlocked.set()

    @engine.job(payload=Item, idempotency=lambda p: f"locked:{p.n}")
    def work(ctx: JobContext, p: Item) -> int:
        if calls.enter(ctx.job_id) == 5:  # mid-run: some jobs are done, many still due
            threading.Thread(target=hold_exclusive_lock, daemon=True).start()
            assert locked.wait(5)
        time.sleep(0.005)
        return p.n

    try:
        ids = engine.enqueue_many("work", [{"n": n} for n in range(40)])
        worker = Worker(engine, concurrency=2, poll_interval=0.05, batch_size=8)
        with capture_logs() as logs:
            thread, reports = run_in_thread(worker)
            try:
                wait_for(unlocked.is_set, 10, "the exclusive lock to be taken and released")
                wait_for(
                    lambda: engine.store.job_count_by_state() == {"succeeded": 40},
                    20,
                    "every job to succeed after the lock is released",
                )
                assert thread.is_alive(), "the worker died on the locked database"
            finally:
                stop_and_join(worker, thread)
        db_errors = events(logs, "worker.db_error")
        assert db_errors, "no worker.db_error logged while the database was locked"
        assert all("locked" in entry["error"] for entry in db_errors)
        # Outcomes are committed alone or in the next claim's transaction: one of the two
        # hit the lock with outcomes waiting, and kept them.
        assert {"commit_completed", "claim_and_dispatch"} & {entry["duty"] for entry in db_errors}
        assert calls.per_job == Counter(dict.fromkeys(ids, 1))
        for job_id in ids:
            # A claim whose started mark hit the lock is released by rescue (attempt not
            # counted) and claimed again; no attempt fails or expires.
            seen = triggers(engine, job_id)
            assert seen[-2:] == ["start", "succeed"] and seen.count("succeed") == 1, seen
            assert set(seen) <= {"enqueue", "start", "release", "succeed"}, seen
            assert engine.get(job_id).attempt == 1
        assert reports[0].succeeded == 40
    finally:
        engine.close()


# -- 2. a kind no worker knows -------------------------------------------------------------


def test_a_kind_no_worker_knows_stays_pending_untouched_and_is_reported(url: str) -> None:
    """A worker without kind 'x' leaves its job untouched and warns that 'x' is unhandled."""
    # Checks Worker._report_unhandled (without it no warning names 'x'); the untouched-row
    # assertions guard claims and rescues skipping kinds this engine has no handler for.
    producer, consumer = Engine(url), Engine(url)

    @producer.job(payload=Item, idempotency=lambda p: f"x:{p.n}", kind="x")
    def x(ctx: JobContext, p: Item) -> None:
        raise AssertionError("no worker here runs x")

    @consumer.job(payload=Item, idempotency=lambda p: f"y:{p.n}", kind="y")
    def y(ctx: JobContext, p: Item) -> int:
        return p.n

    try:
        x_id = producer.enqueue("x", {"n": 1})
        y_id = consumer.enqueue("y", {"n": 1})
        before = producer.store.job_get(x_id)
        with capture_logs() as logs:
            report = Worker(consumer, poll_interval=0.05).run(until_idle=True)
        after = producer.store.job_get(x_id)
        assert before is not None and after is not None
        assert (after.state, after.attempt, after.version) == ("pending", 0, before.version)
        assert after.lease_token is None and after.updated_at == before.updated_at
        assert triggers(producer, x_id) == ["enqueue"]
        assert consumer.get(y_id).state == "succeeded"
        assert (report.claimed, report.succeeded) == (1, 1)
        unhandled = events(logs, "jobs.unhandled_kinds")
        assert unhandled, "no jobs.unhandled_kinds warning"
        assert unhandled[0]["log_level"] == "warning"
        assert unhandled[0]["waiting"] == {"x": 1}
    finally:
        producer.close()
        consumer.close()


# -- 3. a corrupt payload row ----------------------------------------------------------------


def test_a_corrupt_payload_quarantines_only_its_own_job(sqlite_only: None, db_path: Path) -> None:
    """Invalid JSON in one payload quarantines just that job (CorruptPayload); the rest succeed."""
    url = f"sqlite:///{db_path}"
    # Checks JSONDocument reading unparseable text as CorruptJSON (without it the claim
    # query of the whole batch raises) and run_attempt's CorruptJSON branch (without it the
    # error class is pydantic's ValidationError, not CorruptPayload).
    engine = Engine(url, clock=FrozenClock())
    calls = Calls()

    @engine.job(payload=Item, idempotency=lambda p: f"parse:{p.n}")
    def parse(ctx: JobContext, p: Item) -> int:
        calls.enter(ctx.job_id)
        return p.n

    try:
        ids = engine.enqueue_many("parse", [{"n": n} for n in range(5)])
        bad = ids[2]
        with closing(sqlite3.connect(db_path)) as conn, conn:
            conn.execute("UPDATE jobs SET payload = ? WHERE id = ?", ('{"n": 2,', bad))
        report = engine.run_until_idle()
        assert (report.claimed, report.succeeded, report.quarantined) == (5, 4, 1)
        view = engine.get(bad)
        assert view.state == "quarantined"
        assert view.quarantine_reason == "invalid_payload"
        assert view.last_error is not None
        assert view.last_error.error_class == "CorruptPayload"
        assert isinstance(view.payload, CorruptJSON)
        assert view.payload.raw == '{"n": 2,'
        assert bad not in calls.per_job
        for job_id in ids:
            if job_id != bad:
                assert engine.get(job_id).state == "succeeded"
                assert calls.per_job[job_id] == 1
    finally:
        engine.close()


# -- 4. handlers raising SystemExit, BaseException, KeyboardInterrupt --------------------------


class Meltdown(BaseException):
    """A handler's own BaseException subclass (not an Exception)."""


def test_sys_exit_and_a_base_exception_fail_the_attempt_and_the_tick_goes_on(url: str) -> None:
    """sys.exit(3) and a custom BaseException are failed, retried attempts; the batch goes on."""
    # Checks run_attempt's `except BaseException` clause: without it SystemExit propagates
    # out of tick() and nothing of the batch is committed.
    clock = FrozenClock()
    engine = Engine(url, clock=clock)
    calls = Calls()

    @engine.job(
        payload=Item,
        idempotency=lambda p: f"exits:{p.n}",
        retry=RetryPolicy(max_attempts=3, base=1.0, jitter=0),
    )
    def exits(ctx: JobContext, p: Item) -> int:
        calls.enter(ctx.job_id)
        if ctx.attempt == 1 and p.n == 1:
            sys.exit(3)
        if ctx.attempt == 1 and p.n == 2:
            raise Meltdown("core too hot")
        return p.n

    try:
        exiting, melting, fine = engine.enqueue_many("exits", [{"n": 1}, {"n": 2}, {"n": 3}])
        report = engine.tick()
        assert (report.claimed, report.retried, report.succeeded) == (3, 2, 1)
        for job_id, error_class, message in (
            (exiting, "SystemExit", "3"),
            (melting, f"{__name__}.Meltdown", "core too hot"),
        ):
            view = engine.get(job_id)
            assert (view.state, view.attempt) == ("retry_wait", 1)
            assert view.last_error is not None
            assert (view.last_error.error_class, view.last_error.message) == (error_class, message)
            fail = view.history[-1]
            assert (fail.trigger, fail.attempt) == ("fail", 1)
            assert fail.detail is not None and fail.detail["error"] == error_class
        assert engine.get(fine).state == "succeeded"
        clock.advance(1.0)
        engine.run_until_idle()
        for job_id in (exiting, melting):
            assert (engine.get(job_id).state, engine.get(job_id).attempt) == ("succeeded", 2)
        assert calls.per_job == Counter({exiting: 2, melting: 2, fine: 1})
    finally:
        engine.close()


def test_keyboard_interrupt_and_sys_exit_on_a_slot_thread_fail_the_attempt_only(url: str) -> None:
    """KeyboardInterrupt or sys.exit on a slot thread fails the attempt; the worker keeps going."""
    # Checks run_attempt's `except BaseException` clause on handler threads: without it the
    # exception ends the slot thread mid-job, the job is never finished and the worker stalls.
    engine = Engine(url)
    calls = Calls()

    @engine.job(payload=Item, idempotency=lambda p: f"interrupt:{p.n}", retry=QUICK_RETRIES)
    def interrupted(ctx: JobContext, p: Item) -> int:
        calls.enter(ctx.job_id)
        if ctx.attempt == 1 and p.n == 1:
            raise KeyboardInterrupt
        if ctx.attempt == 1 and p.n == 2:
            sys.exit(3)
        return p.n

    try:
        first = engine.enqueue_many("interrupted", [{"n": 1}, {"n": 2}, {"n": 3}])
        worker = Worker(engine, concurrency=1, poll_interval=0.05, grace=1.0)
        thread, _ = run_in_thread(worker)
        try:
            wait_for(
                lambda: all(engine.get(i).state == "succeeded" for i in first),
                10,
                "the interrupted jobs to be retried and succeed",
            )
            later = engine.enqueue("interrupted", {"n": 4})  # the worker still takes new work
            wait_for(lambda: engine.get(later).state == "succeeded", 10, "a later job to run")
            assert thread.is_alive()
        finally:
            stop_and_join(worker, thread)
        for job_id, error_class in ((first[0], "KeyboardInterrupt"), (first[1], "SystemExit")):
            view = engine.get(job_id)
            assert (view.state, view.attempt) == ("succeeded", 2)
            assert [(e.trigger, e.attempt) for e in view.history] == [
                ("enqueue", 0),
                ("start", 1),
                ("fail", 1),
                ("start", 2),
                ("succeed", 2),
            ]
            assert view.history[2].detail is not None
            assert view.history[2].detail["error"] == error_class
        assert calls.per_job == Counter({first[0]: 2, first[1]: 2, first[2]: 1, later: 1})
    finally:
        engine.close()


# -- 5. a handler that kills its own process -------------------------------------------------


def test_a_handler_that_sigkills_its_worker_is_quarantined_after_max_attempts(
    url: str,
) -> None:
    """A job that SIGKILLs its worker every time is quarantined 'exhausted' after two expiries."""
    # Checks Engine.rescue expiring a started attempt (attempt counted, error LeaseExpired)
    # and the chart's exhausted guard on expire: without the first the job stays 'running'
    # forever; if rescue released it without counting, every run would be killed again.
    app = crash_app.make(url)
    try:
        job = app.enqueue("suicide", {"n": 1})
    finally:
        app.close()
    command = [sys.executable, "-m", "engine.cli", "--log-level", "warning", "worker"]
    command += ["--app", CRASH_APP, "--db", url, "--lease", "1", "--until-idle", "--poll", "0.05"]
    codes = []
    for _ in range(6):
        done = subprocess.run(
            command, cwd=ROOT, env=subprocess_env(), capture_output=True, timeout=60, check=False
        )
        codes.append(done.returncode)
        if done.returncode == 0:
            break
        assert done.returncode == -signal.SIGKILL, done.stderr.decode()
        time.sleep(1.3)  # past the dead worker's 1 s lease: the next run's rescue finds it
    assert codes == [-signal.SIGKILL, -signal.SIGKILL, 0]
    reader = Engine(url)
    try:
        view = reader.get(job)
        assert (view.state, view.quarantine_reason, view.attempt) == ("quarantined", "exhausted", 2)
        assert view.last_error is not None
        assert view.last_error.error_class == "LeaseExpired"
        assert [(e.trigger, e.attempt, e.to_state) for e in view.history] == [
            ("enqueue", 0, "pending"),
            ("start", 1, "running"),
            ("expire", 1, "retry_wait"),
            ("start", 2, "running"),
            ("expire", 2, "quarantined"),
        ]
    finally:
        reader.close()


# -- 6. a hung handler -----------------------------------------------------------------------


def test_a_hung_handler_times_out_retries_and_its_late_result_is_fenced(url: str) -> None:
    """A hung handler is failed at its timeout, attempt 2 succeeds, and its late step is fenced."""
    # Checks Worker._enforce_timeouts (without it attempt 1 is not failed while it sleeps),
    # store.step_record's lease check (without it the late step is recorded) and
    # _drop_late / the commit's compare-and-set (without them the late result commits).
    engine = Engine(url, lease_seconds=1.0)
    woke, late_done = threading.Event(), threading.Event()
    late_errors: list[BaseException] = []

    @engine.job(payload=Item, idempotency=lambda p: f"hang:{p.n}", timeout=0.3, retry=QUICK_RETRIES)
    def hang(ctx: JobContext, p: Item) -> str:
        if ctx.attempt > 1:
            return f"attempt {ctx.attempt}"
        time.sleep(1.5)
        woke.set()
        try:
            return ctx.step("late", lambda: "late")
        except BaseException as error:
            late_errors.append(error)
            raise
        finally:
            late_done.set()

    try:
        job = engine.enqueue("hang", {"n": 1})
        worker = Worker(engine, concurrency=1, poll_interval=0.05)
        with capture_logs() as logs:
            thread, _ = run_in_thread(worker)
            try:
                wait_for(lambda: "fail" in triggers(engine, job), 5, "attempt 1 to time out")
                assert not woke.is_set(), "attempt 1 was failed only after it returned"
                fail = engine.get(job).history[2]
                assert (fail.trigger, fail.attempt) == ("fail", 1)
                assert fail.detail is not None and fail.detail["error"] == "HandlerTimeout"
                wait_for(lambda: engine.get(job).state == "succeeded", 5, "attempt 2")
                assert not woke.is_set(), "attempt 2 waited for the hung attempt 1"
                assert late_done.wait(5)
                wait_for(
                    lambda: bool(events(logs, "attempt.fenced_out")), 5, "the late result's fencing"
                )
            finally:
                stop_and_join(worker, thread)
        view = engine.get(job)
        assert (view.state, view.attempt, view.result) == ("succeeded", 2, "attempt 2")
        assert [(e.trigger, e.attempt) for e in view.history if e.trigger == "succeed"] == [
            ("succeed", 2)
        ]
        assert engine.store.step_get_many([job]) == {}, "the late step was recorded"
        assert [type(e).__name__ for e in late_errors] == ["LeaseLost"]
        fenced = events(logs, "attempt.fenced_out")
        assert {entry["attempt"] for entry in fenced} == {1}
        assert worker.totals.fenced >= 1
    finally:
        engine.close()


def test_a_late_return_of_a_timed_out_attempt_keeps_its_retry_under_lease(url: str) -> None:
    """While attempt 2 runs, attempt 1's late return must not stop attempt 2's heartbeats."""
    # Regression: the timed-out attempt 1's late return once dropped attempt 2's in-flight
    # entry (both keyed by job id), so attempt 2 lost its heartbeats and was rescued while
    # running. Expected: attempt 2 keeps its lease and succeeds; two runs, no 'expire'.
    # Checks the heartbeat (Worker._heartbeat renewing every running attempt's lease).
    engine = Engine(url, lease_seconds=0.3)  # heartbeat every 0.1 s, rescue every 0.15 s
    calls = Calls()
    attempt_1_returned, release_attempt_2 = threading.Event(), threading.Event()

    @engine.job(
        payload=Item,
        idempotency=lambda p: f"late:{p.n}",
        timeout=1.5,
        retry=RetryPolicy(max_attempts=5, base=0, jitter=0),
    )
    def slow_then_slower(ctx: JobContext, p: Item) -> int:
        calls.enter(ctx.job_id)
        if ctx.attempt == 1:
            time.sleep(1.7)  # times out at 1.5 s, returns 0.2 s later while attempt 2 runs
            attempt_1_returned.set()
        elif ctx.attempt == 2:
            release_attempt_2.wait(5)
        return ctx.attempt

    try:
        job = engine.enqueue("slow_then_slower", {"n": 1})
        worker = Worker(engine, concurrency=2, poll_interval=0.05)
        thread, _ = run_in_thread(worker)
        try:
            assert attempt_1_returned.wait(5)
            # Attempt 2 keeps running a while (within its 1.5 s timeout): its lease must hold.
            deadline = time.monotonic() + 0.9
            while time.monotonic() < deadline and "expire" not in triggers(engine, job):
                time.sleep(0.02)
            release_attempt_2.set()
            wait_for(lambda: engine.get(job).state == "succeeded", 5, "the job to succeed")
        finally:
            release_attempt_2.set()
            stop_and_join(worker, thread)
        view = engine.get(job)
        assert [(e.trigger, e.attempt) for e in view.history] == [
            ("enqueue", 0),
            ("start", 1),
            ("fail", 1),
            ("start", 2),
            ("succeed", 2),
        ]
        assert (view.attempt, view.result) == (2, 2)
        assert calls.per_job[job] == 2
    finally:
        engine.close()


# -- 7. graceful shutdown --------------------------------------------------------------------


def test_stop_releases_queued_jobs_and_hands_back_a_handler_running_past_grace(url: str) -> None:
    """stop() expires the long job after grace (its late step fails); the job behind it was
    never claimed: the worker claims only for free handler threads."""
    # Checks Worker._shutdown: handing back unstarted jobs (release, attempt not counted),
    # waiting only `grace` for running handlers and then handing them back (expire, attempt
    # counted, due now, WorkerShutdown). Without it run() waits for the long handler, or the
    # jobs stay 'running' under a lease nobody renews.
    engine = Engine(url)
    entered, finished = threading.Event(), threading.Event()
    late_errors: list[str] = []

    class Task(BaseModel):
        name: str
        seconds: float

    @engine.job(payload=Task, idempotency=lambda p: f"task:{p.name}", timeout=30.0)
    def task(ctx: JobContext, p: Task) -> str:
        entered.set()
        time.sleep(p.seconds)
        try:
            return ctx.step("late", lambda: p.name)
        except BaseException as error:
            late_errors.append(type(error).__name__)
            raise
        finally:
            finished.set()

    try:
        long = engine.enqueue("task", {"name": "long", "seconds": 1.5})
        queued = engine.enqueue("task", {"name": "queued", "seconds": 0.0})
        worker = Worker(engine, concurrency=1, grace=0.3, poll_interval=0.05)
        thread, reports = run_in_thread(worker)
        assert entered.wait(5)
        assert engine.get(queued).state == "pending"  # no thread free: not claimed
        stopped_at = time.monotonic()
        stop_and_join(worker, thread)
        assert time.monotonic() - stopped_at < 1.2, "run() waited past grace for the handler"
        assert not finished.is_set()

        view = engine.get(queued)
        assert (view.state, view.attempt) == ("pending", 0)
        assert [e.trigger for e in view.history] == ["enqueue"]

        view = engine.get(long)
        assert (view.state, view.attempt) == ("retry_wait", 1)
        assert view.last_error is not None and view.last_error.error_class == "WorkerShutdown"
        assert view.due_at is not None and view.due_at <= datetime.now(UTC)
        assert [e.trigger for e in view.history] == ["enqueue", "start", "expire"]
        assert view.history[-1].detail is not None
        assert view.history[-1].detail["by"] == "shutdown"
        assert (reports[0].released, reports[0].expired, reports[0].succeeded) == (0, 1, 0)

        assert finished.wait(5)
        assert late_errors == ["LeaseLost"]
        assert engine.store.step_get_many([long, queued]) == {}
        assert engine.get(long).state == "retry_wait"
    finally:
        engine.close()


def test_sigterm_hands_back_a_handler_still_running_after_grace(url: str, tmp_path: Path) -> None:
    """SIGTERM with --grace 0.5 expires the still-running job, exits 0; the job behind it
    (one handler thread) was never claimed."""
    # Checks the worker command's signal handler calling Worker.stop() and the shutdown
    # hand-back: without the handler SIGTERM kills the process (exit -15) and both jobs
    # stay 'running'; without the hand-back the process waits the full 3 s handler.
    app = crash_app.make(url)
    try:
        running = app.enqueue("sleepy", {"tag": "running", "seconds": 3.0})
        queued = app.enqueue("sleepy", {"tag": "queued", "seconds": 0.0})
    finally:
        app.close()
    command = [*jobcharts_command(), "--log-level", "warning", "worker", "--app", CRASH_APP]
    command += ["--db", url, "--concurrency", "1", "--grace", "0.5", "--poll", "0.05"]
    out, err = tmp_path / "worker.out", tmp_path / "worker.err"
    reader = Engine(url)
    try:
        with out.open("wb") as stdout, err.open("wb") as stderr:
            proc = subprocess.Popen(
                command, cwd=ROOT, env=subprocess_env(), stdout=stdout, stderr=stderr
            )
        try:
            wait_for(lambda: reader.get(running).state == "running", 15, "the long job to start")
            time.sleep(0.3)  # the handler is asleep inside its 3 s
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=10)
            took = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert code == 0, err.read_text()
        assert took < 2.5, f"exit took {took:.2f}s: the worker waited for the handler"
        assert "stopping after the running handlers finish" in err.read_text()
        assert "worker stopped: claimed 1" in out.read_text()

        view = reader.get(running)
        assert (view.state, view.attempt) == ("retry_wait", 1)
        assert view.last_error is not None and view.last_error.error_class == "WorkerShutdown"
        assert [e.trigger for e in view.history] == ["enqueue", "start", "expire"]
        view = reader.get(queued)
        assert (view.state, view.attempt) == ("pending", 0)
        assert [e.trigger for e in view.history] == ["enqueue"]
        assert reader.store.step_get_many([running, queued]) == {}
    finally:
        reader.close()


def test_max_ticks_lets_the_dispatched_handler_finish_without_a_stop(url: str) -> None:
    """run(max_ticks=1) lets a dispatched handler finish instead of expiring it after grace."""
    # Regression: a max_ticks run once applied the SIGTERM grace to handlers it had
    # dispatched, expiring a 1 s handler after grace=0.3 s. Expected: succeeded, attempt 1.
    # Checks the finishing of dispatched jobs at the end of a max_ticks run.
    engine = Engine(url)

    @engine.job(payload=Item, idempotency=lambda p: f"second:{p.n}")
    def one_second(ctx: JobContext, p: Item) -> int:
        time.sleep(1.0)
        return p.n

    try:
        job = engine.enqueue("one_second", {"n": 1})
        report = Worker(engine, concurrency=2, grace=0.3, poll_interval=0.05).run(max_ticks=1)
        view = engine.get(job)
        assert (view.state, view.attempt, report.succeeded) == ("succeeded", 1, 1), (
            view.state,
            view.last_error,
        )
    finally:
        engine.close()


# -- 8. several worker processes -------------------------------------------------------------


def test_three_worker_processes_run_300_jobs_each_exactly_once(url: str, tmp_path: Path) -> None:
    """`worker --processes 3 --until-idle` runs 300 jobs each exactly once, in several processes."""
    # Checks that a claim is exclusive across processes (select and compare-and-set update
    # in one write transaction: claiming in two steps without the compare-and-set makes job
    # ids appear twice in `runs`) and the supervisor starting several workers (without it
    # one pid does everything).
    runs = tmp_path / "runs.db"
    with closing(sqlite3.connect(runs)) as conn, conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE runs (job_id INTEGER, attempt INTEGER, pid INTEGER)")
    app = crash_app.make(url)
    try:
        payloads = [{"n": n, "runs": str(runs), "pause": 0.02} for n in range(300)]
        ids = app.enqueue_many("record_run", payloads)
    finally:
        app.close()
    command = [*jobcharts_command(), "--log-level", "warning", "worker", "--app", CRASH_APP]
    command += ["--db", url, "--processes", "3", "--concurrency", "2", "--until-idle"]
    command += ["--poll", "0.05"]
    done = subprocess.run(
        command, cwd=ROOT, env=subprocess_env(), capture_output=True, timeout=90, check=False
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    reader = Engine(url)
    try:
        assert reader.store.job_count_by_state() == {"succeeded": 300}
    finally:
        reader.close()
    with closing(sqlite3.connect(runs)) as conn:
        rows = conn.execute("SELECT job_id, attempt, pid FROM runs").fetchall()
    per_job = Counter(job_id for job_id, _, _ in rows)
    assert per_job == Counter(dict.fromkeys(ids, 1))
    assert {attempt for _, attempt, _ in rows} == {1}
    pids = Counter(pid for _, _, pid in rows)
    assert len(pids) > 1, f"only one process did work: {pids}"


# -- 9. lease takeover fencing at the engine level ---------------------------------------------


def test_a_claim_taken_over_by_another_engine_cannot_commit_or_record_steps(url: str) -> None:
    """After B takes over A's expired claim and succeeds, A's late commit and step are fenced."""
    # Checks the compare-and-set on (state, version, lease token) in job_transition_many
    # (without it A's late SUCCEED overwrites B's result and adds a second 'succeed') and
    # store.step_record's lease check (without it A records a step under a lost lease).
    clock = FrozenClock()
    calls = Calls()

    def build(worker_id: str) -> Engine:
        engine = Engine(url, clock=clock, lease_seconds=5.0, worker_id=worker_id, seed=1)

        @engine.job(
            payload=Item,
            idempotency=lambda p: f"charge:{p.n}",
            retry=RetryPolicy(max_attempts=3, base=1.0, jitter=0),
        )
        def charge(ctx: JobContext, p: Item) -> str:
            calls.enter(ctx.job_id)
            return ctx.step("charge", lambda: f"charged by attempt {ctx.attempt}")

        return engine

    a, b = build("A"), build("B")
    try:
        job = a.enqueue("charge", {"n": 1})
        batch = a.claim(clock.now(), 10)
        started = a.mark_started(batch, batch.jobs, clock.now())
        assert [c.job_id for c in started] == [job]
        old = started[0]

        clock.advance(6.0)  # A's lease (5 s) has run out; A is stalled, not dead
        rescued = b.tick()
        assert (rescued.expired, rescued.claimed) == (1, 0)
        view = b.get(job)
        assert (view.state, view.attempt) == ("retry_wait", 1)
        assert view.last_error is not None and view.last_error.error_class == "LeaseExpired"
        assert (view.history[-1].trigger, view.history[-1].worker) == ("expire", "B")
        clock.advance(1.0)
        assert b.tick().succeeded == 1

        # A wakes up and reports its old attempt.
        report = a.commit([Outcome(old, T.SUCCEED, result="A was here")], clock.now())
        assert (report.fenced, report.succeeded) == (1, 0)
        failed = a.commit([Outcome(old, T.FAIL)], clock.now())
        assert (failed.fenced, failed.retried) == (1, 0)
        assert not a.store.step_record(
            job_id=job,
            lease_token=old.lease_token,
            name="refund",
            result=1,
            attempt=old.attempt,
            at=clock.now(),
        )
        late = run_attempt(
            old, a.store, clock.now, a.telemetry
        )  # A's handler runs its step: refused
        assert late.fenced
        assert late.failure is not None and late.failure.error_class == "LeaseLost"
        assert a.commit([late], clock.now()).fenced == 1

        view = b.get(job)
        assert (view.state, view.attempt, view.result) == ("succeeded", 2, "charged by attempt 2")
        assert [(e.trigger, e.attempt, e.worker) for e in view.history] == [
            ("enqueue", 0, "A"),
            ("start", 1, "A"),
            ("expire", 1, "B"),
            ("start", 2, "B"),
            ("succeed", 2, "B"),
        ]
        assert a.store.step_get_many([job]) == {job: {"charge": "charged by attempt 2"}}
        assert calls.per_job[job] == 2  # B's attempt 2 and A's late run (whose step was refused)
    finally:
        a.close()
        b.close()
