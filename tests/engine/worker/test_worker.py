"""``Worker``: the tick loop on a real SQLite file, with threads, stop() and idle sleeps."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

from engine import Engine, FrozenClock, JobContext, Permanent
from engine.worker import Worker


class Item(BaseModel):
    n: int


class Calls:
    """Handler calls per job id, and how many ran at once, counted thread-safely."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.per_job: Counter[int] = Counter()
        self.threads: set[str] = set()
        self.running = 0
        self.most_at_once = 0

    def enter(self, job_id: int) -> None:
        with self.lock:
            self.per_job[job_id] += 1
            self.threads.add(threading.current_thread().name)
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)

    def leave(self) -> None:
        with self.lock:
            self.running -= 1


def counting_engine(url: str, calls: Calls, **kw: object) -> Engine:
    """An engine whose one kind, ``count``, records each call and sleeps a little."""
    engine = Engine(url, **kw)  # type: ignore[arg-type]

    @engine.job(payload=Item, idempotency=lambda p: f"count:{p.n}")
    def count(ctx: JobContext, p: Item) -> int:
        calls.enter(ctx.job_id)
        try:
            time.sleep(0.002)
            if p.n < 0:
                raise Permanent("negative")
            return p.n
        finally:
            calls.leave()

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
    """Two workers (separate engines, same SQLite file) share 200 jobs without repeats."""
    engines = [counting_engine(url, calls, worker_id=f"w{i}") for i in range(2)]
    try:
        ids = [engines[0].enqueue("count", {"n": n}) for n in range(200)]
        workers = [Worker(e, concurrency=4, poll_interval=0.01, batch_size=16) for e in engines]
        threads = [run_in_thread(w)[0] for w in workers]
        deadline = time.monotonic() + 20
        while engines[0].store.job_count_by_state().get("succeeded", 0) < 200:
            assert time.monotonic() < deadline, engines[0].store.job_count_by_state()
            time.sleep(0.02)
        for w in workers:
            w.stop()
        for t in threads:
            t.join(timeout=5)
            assert not t.is_alive()
        assert calls.per_job == Counter(dict.fromkeys(ids, 1))
        assert sum(w.totals.succeeded for w in workers) == 200
        assert sum(w.totals.fenced for w in workers) == 0
    finally:
        for e in engines:
            e.close()


def test_stop_from_another_thread_ends_an_idle_run_promptly(engine: Engine) -> None:
    """``stop()`` wakes a worker sleeping its (long) idle poll, and ``run`` returns."""
    worker = Worker(engine, poll_interval=30.0)
    thread, reports = run_in_thread(worker)
    time.sleep(0.2)
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
        assert release.wait(10)
        return "done"

    try:
        first = engine.enqueue("block", {"n": 1})
        worker = Worker(engine, concurrency=2, poll_interval=0.01, batch_size=1)
        thread, _ = run_in_thread(worker)
        assert entered.wait(5)
        worker.stop()
        second = engine.enqueue("block", {"n": 2})  # due now, but the worker is stopping
        time.sleep(0.2)
        assert thread.is_alive(), "run returned while a handler was still running"
        assert engine.get(first).state == "running"
        release.set()
        thread.join(timeout=5)
        assert not thread.is_alive()
        assert engine.get(first).state == "succeeded"
        assert engine.get(first).result == "done"
        assert engine.get(second).state == "pending"
        assert worker.totals.claimed == 1
    finally:
        release.set()
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


def test_idle_worker_wakes_for_a_delayed_job_before_its_poll_interval(engine: Engine) -> None:
    """An idle worker with a long poll interval still runs a job due in 0.3 s on time."""
    job = engine.enqueue("count", {"n": 1}, delay=0.3)
    worker = Worker(engine, poll_interval=20.0)
    thread, _ = run_in_thread(worker)
    try:
        deadline = time.monotonic() + 5
        while engine.get(job).state != "succeeded":
            assert time.monotonic() < deadline, "the worker slept past the job's due time"
            time.sleep(0.02)
    finally:
        worker.stop()
        thread.join(timeout=5)
    assert not thread.is_alive()
