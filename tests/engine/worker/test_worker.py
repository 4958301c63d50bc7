"""``Worker``: the tick loop on a real SQLite file, with threads, stop() and idle sleeps.

Waiting is done on events, never on fixed sleeps: a worker that should measure time (timeouts,
grace) gets a ``FakeMonotonic`` the test advances by hand.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
from pydantic import BaseModel

from engine import Engine, FrozenClock, JobContext, Permanent, RetryPolicy
from engine.worker import Worker

WAIT = 10.0  # generous bound on waiting for another thread: only reached when a test fails
BLOCKED = 6 * WAIT  # how long a blocked handler waits for its release: outlasts the test
LOOP_READS = 12  # clock readings the coordinator takes in about three rounds of its loop


class Item(BaseModel):
    n: int


class FakeMonotonic:
    """A monotonic clock that moves only when the test advances it; thread-safe.

    Given as ``Worker(monotonic=clock.now)``, it is what timeouts, heartbeats, rescue and the
    grace deadline are measured on. It counts its readings, so a test can wait until the
    coordinator (its only reader while handlers are blocked) has gone round its loop.
    """

    def __init__(self, start: float = 1000.0) -> None:
        self._changed = threading.Condition()
        self._now = start
        self.reads = 0

    def now(self) -> float:
        with self._changed:
            self.reads += 1
            self._changed.notify_all()
            return self._now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock never goes back")
        with self._changed:
            self._now += seconds

    def wait_for_reads(self, count: int = LOOP_READS, timeout: float = WAIT) -> bool:
        """Block until ``count`` more readings have been taken; False on timeout."""
        with self._changed:
            target = self.reads + count
            return self._changed.wait_for(lambda: self.reads >= target, timeout)


class Calls:
    """Handler calls per job id, and how many ran at once, counted thread-safely.

    ``meet``, when set, holds the first handlers back (once, up to ``WAIT``) until it holds:
    a test of handlers running side by side then does not depend on their being slow enough
    to overlap. A meeting that never happens fails the test's checks, not just slows it.
    """

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.per_job: Counter[int] = Counter()
        self.threads: set[str] = set()
        self.running: Counter[str] = Counter()  # per worker id
        self.most_at_once = 0
        self.most_workers_at_once = 0
        self.meet: Callable[[Calls], bool] | None = None

    def enter(self, job_id: int, worker_id: str) -> None:
        with self.changed:
            self.per_job[job_id] += 1
            self.threads.add(threading.current_thread().name)
            self.running[worker_id] += 1
            self.most_at_once = max(self.most_at_once, sum(self.running.values()))
            workers = sum(1 for n in self.running.values() if n)
            self.most_workers_at_once = max(self.most_workers_at_once, workers)
            self.changed.notify_all()
            meet = self.meet
            if meet is not None:
                self.changed.wait_for(lambda: meet(self), WAIT)
                self.meet = None

    def leave(self, worker_id: str) -> None:
        with self.changed:
            self.running[worker_id] -= 1
            self.changed.notify_all()

    def wait_for_calls(self, count: int, timeout: float = WAIT) -> bool:
        """Block until handlers were entered ``count`` times in all; False on timeout."""
        with self.changed:
            return self.changed.wait_for(lambda: self.per_job.total() >= count, timeout)


def went_round(clock: FakeMonotonic, thread: threading.Thread) -> None:
    """Wait until the coordinator (on ``thread``) has gone round its loop a few times."""
    if not clock.wait_for_reads():
        state = "is still running" if thread.is_alive() else "returned"
        pytest.fail(f"the coordinator stopped going round its loop (run {state})")


def counting_engine(url: str, calls: Calls, **kw: object) -> Engine:
    """An engine whose one kind, ``count``, records each call in ``calls``."""
    engine = Engine(url, **kw)  # type: ignore[arg-type]

    @engine.job(payload=Item, idempotency=lambda p: f"count:{p.n}")
    def count(ctx: JobContext, p: Item) -> int:
        calls.enter(ctx.job_id, engine.worker_id)
        try:
            if p.n < 0:
                raise Permanent("negative")
            return p.n
        finally:
            calls.leave(engine.worker_id)

    return engine


@pytest.fixture
def url(db_url: str) -> str:
    """The worker tests run on both backends."""
    return db_url


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def engine(url: str, calls: Calls) -> Iterator[Engine]:
    eng = counting_engine(url, calls)
    yield eng
    eng.close()


def run_in_thread(worker: Worker, **kw: object) -> tuple[threading.Thread, list[object]]:
    """Start ``worker.run`` on a thread; the returned list receives its report."""
    reports: list[object] = []
    thread = threading.Thread(target=lambda: reports.append(worker.run(**kw)), daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread, reports


def test_many_jobs_with_concurrency_each_run_exactly_once(engine: Engine, calls: Calls) -> None:
    """200 jobs on 4 threads all succeed, each handler called exactly once, in parallel."""
    ids = [engine.enqueue("count", {"n": n}) for n in range(200)]
    assert len(set(ids)) == 200
    calls.meet = lambda c: c.most_at_once >= 2  # a serial worker never meets this

    worker = Worker(engine, concurrency=4, poll_interval=0.01, batch_size=32)
    report = worker.run(until_idle=True)

    assert (report.claimed, report.succeeded, report.retried, report.quarantined) == (
        200,
        200,
        0,
        0,
    )
    assert report.fenced == 0
    assert calls.per_job == Counter(dict.fromkeys(ids, 1))
    assert {r.state for r in engine.store.job_list(limit=1000)} == {"succeeded"}
    assert engine.get(ids[42]).result == 42
    assert len(calls.threads) > 1
    assert 1 < calls.most_at_once <= 4


def test_two_workers_on_one_file_never_run_a_job_twice(url: str, calls: Calls) -> None:
    """Two workers (separate engines, same database) share 200 jobs without repeats."""
    engines = [counting_engine(url, calls, worker_id=f"w{i}") for i in range(2)]
    calls.meet = lambda c: c.most_workers_at_once == 2  # both claim side by side
    try:
        ids = [engines[0].enqueue("count", {"n": n}) for n in range(200)]
        workers = [Worker(e, concurrency=4, poll_interval=0.01, batch_size=16) for e in engines]
        threads = [run_in_thread(w, until_idle=True) for w in workers]
        for thread, _ in threads:
            thread.join(timeout=60)
            assert not thread.is_alive()
        assert engines[0].store.job_count_by_state() == {"succeeded": 200}
        assert calls.per_job == Counter(dict.fromkeys(ids, 1))
        assert calls.most_workers_at_once == 2
        assert all(w.totals.succeeded > 0 for w in workers)
        assert sum(w.totals.succeeded for w in workers) == 200
        assert sum(w.totals.fenced for w in workers) == 0
    finally:
        for e in engines:
            e.close()


def test_stop_from_another_thread_ends_an_idle_run_promptly(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``stop()`` wakes a worker sleeping its (long) idle poll, and ``run`` returns."""
    idle = threading.Event()
    sleep_for = engine.sleep_for

    def spied_sleep_for(ceiling: float) -> float:
        idle.set()  # the coordinator is working out its idle sleep, then takes it
        return sleep_for(ceiling)

    monkeypatch.setattr(engine, "sleep_for", spied_sleep_for)
    # On a clock that stands still, nothing is due for 10 s (the first heartbeat); only the
    # wake-up of stop() can end the sleep sooner.
    clock = FakeMonotonic()
    worker = Worker(engine, poll_interval=30.0, rescue_interval=60.0, monotonic=clock.now)
    thread, reports = run_in_thread(worker)
    assert idle.wait(WAIT), "the worker never went idle"
    assert thread.is_alive()
    started = time.monotonic()
    worker.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - started < 2.0
    assert len(reports) == 1
    assert reports[0].claimed == 0  # type: ignore[attr-defined]


def test_stop_waits_for_the_running_handler_to_finish_and_commit(url: str) -> None:
    """``stop()`` during an attempt lets that handler finish and commit before ``run`` ends."""
    engine = Engine(url)
    entered, release = threading.Event(), threading.Event()

    @engine.job(payload=Item, idempotency=lambda p: f"block:{p.n}")
    def block(ctx: JobContext, p: Item) -> str:
        entered.set()
        assert release.wait(BLOCKED)
        return "done"

    try:
        first = engine.enqueue("block", {"n": 1})
        clock = FakeMonotonic()  # stands still: the 30 s grace never runs out
        worker = Worker(
            engine, concurrency=2, poll_interval=0.01, batch_size=1, monotonic=clock.now
        )
        thread, reports = run_in_thread(worker)
        assert entered.wait(WAIT)
        worker.stop()
        # The blocked handler has read the clock already: the readings now are the
        # coordinator's. After a few rounds of its loop it has seen the stop; after a few
        # more, a worker that still claimed would have claimed the second job.
        went_round(clock, thread)
        second = engine.enqueue("block", {"n": 2})  # due now, but the worker is stopping
        went_round(clock, thread)
        assert thread.is_alive(), "run returned while a handler was still running"
        assert engine.get(first).state == "running"
        release.set()
        thread.join(timeout=WAIT)
        assert not thread.is_alive()
        assert engine.get(first).state == "succeeded"
        assert engine.get(first).result == "done"
        assert engine.get(second).state == "pending"
        assert worker.totals.claimed == 1
        assert reports[0].succeeded == 1  # type: ignore[attr-defined]  # before run returned
    finally:
        release.set()
        engine.close()


def test_a_hung_handler_is_failed_at_its_timeout_and_its_late_result_fenced(url: str) -> None:
    """Past its timeout on the worker's clock a blocked attempt fails and is retried at once;
    its late return is fenced out (its step refused), and the retry's result stands."""
    engine = Engine(url)
    entered, release = threading.Event(), threading.Event()
    retried = threading.Event()
    hung: list[threading.Thread] = []
    late_errors: list[str] = []

    @engine.job(
        payload=Item,
        idempotency=lambda p: f"hang:{p.n}",
        timeout=60.0,  # far beyond the test's real waits: only the fake clock reaches it
        retry=RetryPolicy(max_attempts=3, base=0, jitter=0),
    )
    def hang(ctx: JobContext, p: Item) -> str:
        if ctx.attempt > 1:
            retried.set()
            return f"attempt {ctx.attempt}"
        hung.append(threading.current_thread())
        entered.set()
        assert release.wait(BLOCKED)
        try:
            return str(ctx.step("late", lambda: "late"))
        except BaseException as error:
            late_errors.append(type(error).__name__)
            raise

    try:
        job = engine.enqueue("hang", {"n": 1})
        clock = FakeMonotonic()
        worker = Worker(engine, poll_interval=0.01, monotonic=clock.now)
        thread, reports = run_in_thread(worker)
        try:
            assert entered.wait(WAIT)
            for step in (0.0, 59.0):  # not yet: the coordinator looks, and lets it run
                clock.advance(step)
                went_round(clock, thread)
                assert not retried.is_set(), f"failed before its timeout, at {step:g} s"
                assert engine.get(job).state == "running"
            clock.advance(2.0)
            assert retried.wait(WAIT), "attempt 1 was not failed at its timeout"
            assert not release.is_set()  # attempt 2 ran while attempt 1 was still blocked
            release.set()
            hung[0].join(timeout=WAIT)  # its runner exits once the late result is handed in
            assert not hung[0].is_alive()
        finally:
            release.set()
            worker.stop()
            thread.join(timeout=WAIT)
        assert not thread.is_alive()
        view = engine.get(job)
        assert (view.state, view.attempt, view.result) == ("succeeded", 2, "attempt 2")
        assert [(e.trigger, e.attempt) for e in view.history] == [
            ("enqueue", 0),
            ("start", 1),
            ("fail", 1),
            ("start", 2),
            ("succeed", 2),
        ]
        assert view.history[2].detail is not None
        assert view.history[2].detail["error"] == "HandlerTimeout"
        assert late_errors == ["LeaseLost"]
        assert engine.store.step_get_many([job]) == {}, "the late step was recorded"
        report = reports[0]
        assert (report.succeeded, report.fenced) == (1, 1)  # type: ignore[attr-defined]
    finally:
        engine.close()


def test_stop_hands_back_a_handler_still_running_when_grace_runs_out(url: str) -> None:
    """After ``stop()`` the worker waits ``grace`` on its clock for a blocked handler, then
    expires it (attempt counted); its late step fails. The job behind it is never claimed:
    the worker claims only for free handler threads."""
    engine = Engine(url)
    entered, release, finished = threading.Event(), threading.Event(), threading.Event()
    late_errors: list[str] = []

    @engine.job(payload=Item, idempotency=lambda p: f"task:{p.n}", timeout=600.0)
    def task(ctx: JobContext, p: Item) -> int:
        entered.set()
        assert release.wait(BLOCKED)
        try:
            return int(ctx.step("late", lambda: p.n))
        except BaseException as error:
            late_errors.append(type(error).__name__)
            raise
        finally:
            finished.set()

    try:
        long = engine.enqueue("task", {"n": 1})
        queued = engine.enqueue("task", {"n": 2})
        clock = FakeMonotonic()
        worker = Worker(engine, concurrency=1, grace=60.0, poll_interval=0.01, monotonic=clock.now)
        thread, reports = run_in_thread(worker)
        try:
            assert entered.wait(WAIT)
            assert engine.get(queued).state == "pending"  # no thread free: not claimed
            worker.stop()
            went_round(clock, thread)
            assert thread.is_alive(), "run returned before grace ran out"
            clock.advance(59.0)
            went_round(clock, thread)
            assert thread.is_alive(), "run returned before grace ran out"
            clock.advance(2.0)
            thread.join(timeout=WAIT)
            assert not thread.is_alive(), "run waited past grace for the handler"
            assert not finished.is_set()
        finally:
            release.set()
        assert finished.wait(WAIT)

        view = engine.get(queued)
        assert (view.state, view.attempt) == ("pending", 0)
        assert [e.trigger for e in view.history] == ["enqueue"]
        view = engine.get(long)
        assert (view.state, view.attempt) == ("retry_wait", 1)
        assert view.last_error is not None and view.last_error.error_class == "WorkerShutdown"
        assert [e.trigger for e in view.history] == ["enqueue", "start", "expire"]
        assert view.history[-1].detail is not None
        assert view.history[-1].detail["by"] == "shutdown"
        report = reports[0]
        assert (report.released, report.expired, report.succeeded) == (0, 1, 0)  # type: ignore[attr-defined]
        assert late_errors == ["LeaseLost"]
        assert engine.store.step_get_many([long, queued]) == {}
    finally:
        engine.close()


def test_run_stops_after_max_ticks(engine: Engine, calls: Calls) -> None:
    """``run(max_ticks=1)`` with batch size 1 runs exactly one job and leaves the rest."""
    ids = [engine.enqueue("count", {"n": n}) for n in range(3)]
    report = Worker(engine, batch_size=1, poll_interval=0.01).run(max_ticks=1)
    assert report.claimed == 1
    assert sum(calls.per_job.values()) == 1
    assert sorted(engine.get(i).state for i in ids) == ["pending", "pending", "succeeded"]


def test_worker_counts_failures(engine: Engine) -> None:
    """The worker's totals add up successes and quarantines across its ticks."""
    engine.enqueue("count", {"n": 1})
    engine.enqueue("count", {"n": -1})
    report = Worker(engine, concurrency=2, poll_interval=0.01).run(max_ticks=2)
    assert (report.claimed, report.succeeded, report.quarantined) == (2, 1, 1)


def test_concurrency_below_one_is_refused(engine: Engine) -> None:
    """``Worker(concurrency=0)`` raises a ValueError naming the bad value."""
    with pytest.raises(ValueError, match="concurrency must be >= 1, got 0"):
        Worker(engine, concurrency=0)


# -- sleep_for: what an idle worker sleeps ------------------------------------------------


def test_sleep_for_is_the_time_until_the_next_delayed_job_capped(url: str, calls: Calls) -> None:
    """``sleep_for`` is the ceiling with no jobs, else the wait until the earliest due job."""
    clock = FrozenClock()
    engine = counting_engine(url, calls, clock=clock)
    try:
        assert engine.sleep_for(5.0) == 5.0  # nothing waiting at all
        engine.enqueue("count", {"n": 1}, delay=30)
        engine.enqueue("count", {"n": 2}, delay=3)
        assert engine.sleep_for(10.0) == pytest.approx(3.0)
        assert engine.sleep_for(1.0) == 1.0  # capped by the ceiling
        clock.advance(2.5)
        assert engine.sleep_for(10.0) == pytest.approx(0.5)
        clock.advance(1.0)  # the job is overdue: no sleep at all
        assert engine.sleep_for(10.0) == 0.0
        engine.run_until_idle()
        assert engine.sleep_for(60.0) == pytest.approx(26.5)  # the 30 s job is next
    finally:
        engine.close()


def test_sleep_for_ignores_other_apps_jobs_and_finished_ones(url: str, calls: Calls) -> None:
    """Jobs of kinds this engine does not run, and final jobs, do not shorten its sleep."""
    clock = FrozenClock()
    engine = counting_engine(url, calls, clock=clock)
    other = Engine(url, clock=clock)

    @other.job(payload=Item, idempotency=lambda p: f"other:{p.n}")
    def elsewhere(ctx: JobContext, p: Item) -> None:
        return None

    try:
        other.enqueue("elsewhere", {"n": 1}, delay=1)
        engine.enqueue("count", {"n": 1})
        engine.run_until_idle()  # succeeded: no due_at any more
        assert engine.sleep_for(7.0) == 7.0
        assert other.sleep_for(7.0) == pytest.approx(1.0)
    finally:
        other.close()
        engine.close()


def test_idle_worker_wakes_for_a_delayed_job_before_its_poll_interval(
    engine: Engine, calls: Calls
) -> None:
    """An idle worker with a long poll interval still runs a job due in 0.3 s on time."""
    # Real time on purpose: the job falls due on the database's clock, and the worker must
    # wake for it from its sleep (every other deadline of its loop is 10 s away or more).
    job = engine.enqueue("count", {"n": 1}, delay=0.3)
    worker = Worker(engine, poll_interval=20.0, rescue_interval=60.0)
    thread, _ = run_in_thread(worker)
    try:
        assert calls.wait_for_calls(1, timeout=5), "the worker slept past the job's due time"
    finally:
        worker.stop()
        thread.join(timeout=WAIT)
    assert not thread.is_alive()
    assert engine.get(job).state == "succeeded"  # stop() let the handler finish and commit
