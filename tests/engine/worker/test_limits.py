"""Global limits: at most N jobs of a kind (or queue) running across every worker process,
at most N starts per period, and a limited kind's backlog never holds up other kinds."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from engine import Engine, Invariant, JobContext, Rate, RegistrationError
from engine.outcomes import Outcome
from engine.view import waiting_reason
from engine.worker import Worker
from tests.engine import limits_app

ROOT = Path(__file__).resolve().parents[3]
WAIT = 60.0  # generous: only reached when a rule is broken
HARMLESS = Invariant("the test's handlers only count")


class Item(BaseModel):
    n: int


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of intervals open at one instant."""
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    open_now = peak = 0
    for _, step in edges:  # an end sorts before a begin at the same instant
        open_now += step
        peak = max(peak, open_now)
    return peak


class Gauge:
    """Counts handlers running at once in this process (and the peak)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = self.peak = 0
        self.done: list[int] = []

    def run(self, n: int, seconds: float) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(seconds)
        with self.lock:
            self.now -= 1
            self.done.append(n)


def run_worker(engine: Engine, concurrency: int) -> tuple[Worker, threading.Thread]:
    worker = Worker(engine, concurrency=concurrency, poll_interval=0.05)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return worker, thread


def stop(worker: Worker, thread: threading.Thread) -> None:
    worker.stop()
    thread.join(WAIT)
    assert not thread.is_alive()


def test_a_kind_limit_caps_running_jobs_and_other_kinds_run_past_its_backlog(db_url: str) -> None:
    """Eight threads, a kind limited to 2 with 8 jobs due first, then 4 jobs of a free
    kind: never more than 2 of the limited kind run, and the free kind's jobs all finish
    while the limited backlog still waits (its jobs do not fill the claims)."""
    engine = Engine(db_url)
    capped, free = Gauge(), Gauge()

    @engine.job(payload=Item, idempotency=HARMLESS, concurrency=2)
    def limited(ctx: JobContext, p: Item) -> None:
        capped.run(p.n, 0.3)

    @engine.job(payload=Item, idempotency=HARMLESS)
    def unlimited(ctx: JobContext, p: Item) -> None:
        free.run(p.n, 0.05)

    try:
        waiting = engine.enqueue_many("limited", [{"n": n} for n in range(8)])
        engine.enqueue_many("unlimited", [{"n": n} for n in range(4)])
        worker, thread = run_worker(engine, concurrency=8)
        try:
            wait_until(lambda: len(free.done) == 4, "the free kind's jobs")
            assert len(capped.done) < 8, "the free kind waited behind the limited backlog"
            wait_until(lambda: len(capped.done) == 8, "the limited jobs")
        finally:
            stop(worker, thread)
        assert capped.peak == 2
        assert all(engine.get(j).state == "succeeded" for j in waiting)
    finally:
        engine.close()


def test_a_queue_limit_spans_the_kinds_of_the_queue(db_url: str) -> None:
    """Two kinds in one queue limited to 1 running: their handlers never overlap; a kind
    in another queue is not held by it."""
    engine = Engine(db_url)
    engine.limit_queue("mail", concurrency=1)
    gauge, other = Gauge(), Gauge()

    @engine.job(payload=Item, idempotency=HARMLESS, queue="mail")
    def welcome(ctx: JobContext, p: Item) -> None:
        gauge.run(p.n, 0.1)

    @engine.job(payload=Item, idempotency=HARMLESS, queue="mail")
    def digest(ctx: JobContext, p: Item) -> None:
        gauge.run(p.n, 0.1)

    @engine.job(payload=Item, idempotency=HARMLESS)
    def resize(ctx: JobContext, p: Item) -> None:
        other.run(p.n, 0.1)

    try:
        engine.enqueue_many("welcome", [{"n": n} for n in range(3)])
        engine.enqueue_many("digest", [{"n": n} for n in range(3)])
        engine.enqueue_many("resize", [{"n": n} for n in range(3)])
        worker, thread = run_worker(engine, concurrency=4)
        try:
            wait_until(lambda: len(gauge.done) == 6 and len(other.done) == 3, "every job")
        finally:
            stop(worker, thread)
        assert gauge.peak == 1
        assert other.peak == 3
    finally:
        engine.close()


def read_log(log: Path) -> list[tuple[int, float, float, int]]:
    lines = log.read_text().split("\n") if log.exists() else []
    return [
        (int(job), float(began), float(ended), int(pid))
        for job, began, ended, pid in (line.split() for line in lines if line)
    ]


def test_limits_hold_across_three_worker_processes(db_url: str, tmp_path: Path) -> None:
    """Three `jobcharts worker` processes (4 threads each): the capped kind never has more
    than 2 handlers running at once by the handlers' own clocks, the paced kind's claims
    never put 4 starts within one second, and every job runs exactly once."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHARTS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    app = Engine(db_url)  # the app's kinds, registered here to enqueue them
    for kind in ("capped", "paced", "free"):
        spec = limits_app.engine.registry.get(kind)
        app.job(
            payload=limits_app.Timed,
            idempotency=limits_app.HARMLESS,
            kind=kind,
            concurrency=limits_app.CAPPED if kind == "capped" else None,
            rate=limits_app.PACED if kind == "paced" else None,
        )(spec.handler)
    logs = {kind: tmp_path / f"{kind}.log" for kind in ("capped", "paced", "free")}
    command = [sys.executable, "-m", "engine.cli", "--log-level", "info", "worker"]
    command += ["--app", "tests.engine.limits_app:engine", "--db", db_url]
    command += ["--concurrency", "4", "--poll", "0.1"]
    outputs = [tmp_path / f"worker-{n}.log" for n in range(3)]
    procs = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=out.open("w"), stderr=subprocess.STDOUT)
        for out in outputs
    ]
    # Every process is up and claiming before the jobs exist: all three compete for them.
    wait_until(lambda: all("worker.started" in out.read_text() for out in outputs), "three workers")
    ids = {
        kind: app.enqueue_many(kind, [{"log": str(log), "seconds": 0.25}] * 10)
        for kind, log in logs.items()
    }
    try:
        wait_until(
            lambda: all(len(read_log(log)) >= 10 for log in logs.values()), "every job to run"
        )
        wait_until(
            lambda: all(app.get(j).state == "succeeded" for js in ids.values() for j in js),
            "every job to be committed",
        )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    runs = {kind: read_log(log) for kind, log in logs.items()}
    for kind, jobs in runs.items():
        assert sorted(j for j, *_ in jobs) == sorted(ids[kind]), f"{kind}: not exactly once"
    capped = runs["capped"]
    assert most_at_once([(b, e) for _, b, e, _ in capped]) == limits_app.CAPPED
    pids = {pid for jobs in runs.values() for *_, pid in jobs}
    assert len(pids) >= 2, "one process took every job"
    assert most_at_once([(b, e) for _, b, e, _ in runs["free"]]) > limits_app.CAPPED
    starts = sorted(
        event.at
        for job_id in ids["paced"]
        for event in app.get(job_id).history
        if event.trigger == "start"
    )
    assert len(starts) == 10
    n, per = limits_app.PACED.starts, timedelta(seconds=limits_app.PACED.seconds)
    assert all(later - first >= per for first, later in zip(starts, starts[n:], strict=False))
    app.close()


def test_a_rate_limit_spaces_starts_in_one_worker(db_url: str) -> None:
    """Rate(2, per=0.5) and 6 quick jobs on 6 threads: no 3 starts within 0.5 s."""
    engine = Engine(db_url)
    gauge = Gauge()

    @engine.job(payload=Item, idempotency=HARMLESS, rate=Rate(2, per=0.5))
    def paced(ctx: JobContext, p: Item) -> None:
        gauge.run(p.n, 0.0)

    try:
        ids = engine.enqueue_many("paced", [{"n": n} for n in range(6)])
        worker, thread = run_worker(engine, concurrency=6)
        try:
            wait_until(lambda: len(gauge.done) == 6, "the paced jobs")
        finally:
            stop(worker, thread)
        starts = sorted(e.at for j in ids for e in engine.get(j).history if e.trigger == "start")
        assert len(starts) == 6
        gaps = [later - first for first, later in zip(starts, starts[2:], strict=False)]
        assert all(gap >= timedelta(seconds=0.5) for gap in gaps), gaps
    finally:
        engine.close()


def test_inspect_and_describe_name_the_limit(db_url: str) -> None:
    """A job held back by its kind's limit says so, naming the limit; describe lists it."""
    engine = Engine(db_url)
    release = threading.Event()

    @engine.job(payload=Item, idempotency=HARMLESS, concurrency=1, rate=Rate(5, per=60))
    def single(ctx: JobContext, p: Item) -> None:
        assert release.wait(WAIT)

    try:
        first, second = engine.enqueue_many("single", [{"n": 1}, {"n": 2}])
        assert waiting_reason(engine, engine.get(second)) is None
        worker, thread = run_worker(engine, concurrency=2)
        try:
            wait_until(lambda: engine.get(first).started_at is not None, "the first start")
            time.sleep(0.2)  # room for a (wrong) second start
            view = engine.get(second)
            assert view.state == "pending"
            reason = waiting_reason(engine, view)
            assert reason == "kind 'single' is at its limit of 1 running", reason
            answers = view.explain(engine.chart_of(view.chart), engine.now(), waiting=reason)
            assert reason in answers["did it run"]
            release.set()
            wait_until(lambda: engine.get(second).state == "succeeded", "the second job")
        finally:
            release.set()
            stop(worker, thread)
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency must be an int >= 1"),
        ({"concurrency": 1.5}, "concurrency must be an int >= 1"),
        ({"rate": (3, 1)}, "rate must be a Rate"),
    ],
)
def test_bad_limits_are_refused_at_registration(options: dict[str, object], message: str) -> None:
    engine = Engine("sqlite://")
    with pytest.raises(RegistrationError, match=message):
        engine.job(idempotency=HARMLESS, kind="k", **options)(lambda ctx, p: None)  # type: ignore[arg-type]
    assert engine.registry.find("k") is None


def test_bad_rates_and_queue_limits_are_refused() -> None:
    for starts, per in ((0, 1), (3, 0), (3, -1.0), (3, float("nan")), (True, 1)):
        with pytest.raises(RegistrationError, match="Rate"):
            Rate(starts, per=per)  # type: ignore[arg-type]
    engine = Engine("sqlite://")
    with pytest.raises(RegistrationError, match="pass concurrency=, rate= or both"):
        engine.limit_queue("mail")
    engine.limit_queue("mail", concurrency=2)
    with pytest.raises(RegistrationError, match="already has a limit"):
        engine.limit_queue("mail", rate=Rate(1))


def test_racing_claims_never_overshoot_a_limit(db_url: str) -> None:
    """Eight threads claim one job at a time at once, over and over, on their own engines
    (PostgreSQL: their own connections): a kind limited to 3 never has more than 3 leased,
    and it does fill up to 3 (the claims are not simply refused)."""
    engines = [Engine(db_url) for _ in range(8)]
    for engine in engines:
        engine.job(payload=Item, idempotency=HARMLESS, concurrency=3, kind="limited")(
            lambda ctx, p: None
        )
    try:
        engines[0].enqueue_many("limited", [{"n": n} for n in range(40)])
        barrier = threading.Barrier(len(engines))
        claimed: list[int] = []

        def claim_once(engine: Engine) -> None:
            barrier.wait(WAIT)
            batch = engine.claim(engine.now(), 1)
            claimed.extend(job.job_id for job in batch.jobs)

        for _ in range(3):
            threads = [threading.Thread(target=claim_once, args=(e,)) for e in engines]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT)
        assert len(claimed) == 3, claimed
        held = [j for j in range(1, 41) if engines[0].get(j).lease_expires_at is not None]
        assert sorted(held) == sorted(claimed)
    finally:
        for engine in engines:
            engine.close()


def test_describe_lists_each_kinds_limits() -> None:
    from click.testing import CliRunner

    from engine.cli import cli

    result = CliRunner().invoke(cli, ["describe", "--app", "tests.engine.limits_app:engine"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    assert "kind: at most 2 running" in lines["capped"]
    assert "kind: at most 3 starts per 1s" in lines["paced"]
    assert "limits" in result.output.splitlines()[0]
    assert " - " in lines["free"]


def test_a_job_held_by_a_rate_says_when_the_next_start_is_free(db_url: str) -> None:
    engine = Engine(db_url)
    engine.limit_queue("slow-api", rate=Rate(1, per=600))

    @engine.job(payload=Item, idempotency=HARMLESS, queue="slow-api")
    def call(ctx: JobContext, p: Item) -> None:
        pass

    try:
        first, second = engine.enqueue_many("call", [{"n": 1}, {"n": 2}])
        report = engine.run_until_idle()
        assert report.succeeded == 1
        assert engine.get(first).state == "succeeded" and engine.get(second).state == "pending"
        reason = waiting_reason(engine, engine.get(second))
        assert reason is not None
        assert reason.startswith(
            "queue 'slow-api' is at its rate of 1 start per 600s, next start at "
        )
    finally:
        engine.close()


def test_a_claim_says_held_only_when_a_due_job_waits_on_a_full_scope(db_url: str) -> None:
    """`held` makes an idle worker sleep until the limit frees instead of polling: it is
    set when a due job waits on a full scope, and not merely because a scope is full."""
    engine = Engine(db_url)
    engine.job(payload=Item, idempotency=HARMLESS, concurrency=1, kind="one")(lambda c, p: None)
    engine.job(payload=Item, idempotency=HARMLESS, kind="other")(lambda c, p: None)
    try:
        first = engine.claim(engine.now(), 5)
        assert not first.jobs and not first.held  # nothing due at all
        engine.enqueue_many("one", [{"n": 1}, {"n": 2}])
        batch = engine.claim(engine.now(), 5)
        assert len(batch.jobs) == 1 and batch.held  # the second waits on the limit
        again = engine.claim(engine.now(), 5)
        assert not again.jobs and again.held  # still waiting: the scope is shut
        engine.commit([Outcome(batch.jobs[0], "succeed")], engine.now())
        last = engine.claim(engine.now(), 5)
        assert len(last.jobs) == 1 and not last.held  # full again, but nothing waits
    finally:
        engine.close()


def test_a_claim_waits_on_no_lock_of_a_queue_it_does_not_serve(backend: str, db_url: str) -> None:
    """PostgreSQL: another claim holding the lock of the limited queue "mail" does not hold
    up a worker that serves only the queue "other"."""
    if backend != "postgresql":
        pytest.skip("the scopes' locks are PostgreSQL advisory locks")
    import sqlalchemy as sa

    engine = Engine(db_url)
    engine.limit_queue("mail", concurrency=1)
    engine.job(payload=Item, idempotency=HARMLESS, queue="mail", kind="m")(lambda c, p: None)
    engine.job(payload=Item, idempotency=HARMLESS, queue="other", kind="o")(lambda c, p: None)
    other = sa.create_engine(db_url)
    try:
        job = engine.enqueue("o", {"n": 1})
        with other.begin() as conn:  # a claim of "mail" in progress elsewhere
            conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                {"k": "limit\x1fqueue:mail"},
            )
            done: list[list[int]] = []
            thread = threading.Thread(
                target=lambda: done.append(
                    [c.job_id for c in engine.claim(engine.now(), 1, queues=["other"]).jobs]
                ),
                daemon=True,
            )
            thread.start()
            thread.join(5.0)
            assert done == [[job]], "the claim waited on the lock of a queue it does not serve"
    finally:
        other.dispose()
        engine.close()
