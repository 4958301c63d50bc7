"""Bench scenarios that run a real ``jobcharts worker`` process: drain throughput (at the
defaults, with flags, with ``--processes``) and wake-up latency with an idle worker.

Every run is checked twice: outside the database, the handlers' log holds each job id
exactly once; inside, every job succeeded with exactly 3 events (enqueue, start, succeed).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.engine import Engine
from engine.harness import bench_app
from engine.harness.scratch import scratch_database

APP = "engine.harness.bench_app:engine"
WAIT = 300.0  # a run that takes longer than this has failed, not slowed down


class BenchFailure(RuntimeError):
    """A run lost, repeated or left work: its figures must not be reported."""


@dataclass(frozen=True)
class Drain:
    jobs: int
    seconds: float  # from the first handler start to the last

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class Latency:
    samples: list[float]  # milliseconds from the start of enqueue() to the handler's start

    def quantile(self, q: int) -> float:
        return statistics.quantiles(self.samples, n=100, method="inclusive")[q - 1]


def exactly_once_problems(started: dict[int, list[float]], ids: Sequence[int]) -> list[str]:
    """What is wrong with a run whose handlers logged ``started`` (id -> start times)."""
    problems = []
    missing = [i for i in ids if i not in started]
    repeated = [i for i, times in started.items() if len(times) > 1]
    unknown = sorted(set(started) - set(ids))
    if missing:
        problems.append(f"{len(missing)} jobs never ran (first: {missing[:5]})")
    if repeated:
        problems.append(f"{len(repeated)} jobs ran more than once (first: {repeated[:5]})")
    if unknown:
        problems.append(f"{len(unknown)} unknown job ids ran (first: {unknown[:5]})")
    return problems


def read_starts(log: Path) -> dict[int, list[float]]:
    starts: dict[int, list[float]] = {}
    if log.exists():
        for line in log.read_text().splitlines():
            job_id, at = line.split()
            starts.setdefault(int(job_id), []).append(float(at))
    return starts


def check_database(engine: Engine, jobs: int) -> list[str]:
    """Every job succeeded, each with its 3 events, and no job was started twice."""
    problems = []
    states = engine.store.job_count_by_state()
    if states != {"succeeded": jobs}:
        problems.append(f"states {states}, expected {{'succeeded': {jobs}}}")
    events = engine.store.audit_event_count()
    if events != 3 * jobs:
        problems.append(f"{events} events, expected {3 * jobs}")
    starts = engine.store.audit_event_count(["start"])
    if starts != jobs:
        problems.append(f"{starts} start events for {jobs} jobs")
    return problems


def bench_engine(url: str, handler: Callable[..., None] | None = None) -> Engine:
    """An engine on ``url`` with the bench app's kinds (to enqueue and audit), run by
    ``handler`` instead of the app's when given."""
    engine = Engine(url)
    for kind in ("noop", "anoop"):
        spec = bench_app.engine.registry.get(kind)
        engine.job(payload=bench_app.Noop, idempotency=spec.idempotency, kind=kind)(
            handler or spec.handler
        )
    return engine


def worker_command(url: str, flags: Sequence[str], until_idle: bool) -> list[str]:
    command = [sys.executable, "-m", "engine.cli", "--log-level", "warning", "worker"]
    command += ["--app", APP, "--db", url, *flags]
    return command + (["--until-idle"] if until_idle else [])


def _env(log: Path) -> dict[str, str]:
    env = dict(os.environ)
    env[bench_app.LOG_ENV] = str(log)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    return env


def drain(
    db: str | None,
    jobs: int,
    flags: Sequence[str] = (),
    kind: str = "noop",
    env: dict[str, str] | None = None,
) -> Drain:
    """Enqueue ``jobs`` no-op jobs of ``kind`` (1,000 per call; ``anoop``: the async
    handler), then one ``jobcharts worker --until-idle`` with ``flags`` drains them; the
    rate runs from first to last start."""
    with scratch_database(db) as url, tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "started.log"
        engine = bench_engine(url)
        try:
            ids: list[int] = []
            for first in range(0, jobs, 1000):
                ids += engine.enqueue_many(
                    kind, [{"n": n} for n in range(first, min(first + 1000, jobs))]
                )
            done = subprocess.run(  # noqa: S603 - our own worker command
                worker_command(url, flags, until_idle=True),
                env={**_env(log), **(env or {})},
                capture_output=True,
                text=True,
                timeout=WAIT,
            )
            if done.returncode != 0:
                raise BenchFailure(f"the worker exited {done.returncode}: {done.stderr[-2000:]}")
            starts = read_starts(log)
            problems = exactly_once_problems(starts, ids) + check_database(engine, jobs)
        finally:
            engine.close()
    if problems:
        raise BenchFailure("; ".join(problems))
    times = [t for ts in starts.values() for t in ts]
    return Drain(jobs, max(times) - min(times))


def latency(db: str | None, samples: int = 200, gap: float = 0.02) -> Latency:
    """With a worker at its defaults idle, enqueue one job every ``gap`` seconds; each
    sample is the time from the start of its ``enqueue()`` call to its handler's start."""
    with scratch_database(db) as url, tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "started.log"
        engine = bench_engine(url)
        worker = subprocess.Popen(  # noqa: S603 - our own worker command
            worker_command(url, (), until_idle=False),
            env=_env(log),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            ids = [engine.enqueue("noop", {"n": -1})]  # the worker is up once this has run
            _wait_for(lambda: ids[0] in read_starts(log), worker, "the warm-up job")
            time.sleep(0.5)  # let it settle into idle
            sent: dict[int, float] = {}
            for n in range(samples):
                began = time.time()
                job_id = engine.enqueue("noop", {"n": n})
                sent[job_id] = began
                ids.append(job_id)
                time.sleep(gap)
            _wait_for(lambda: len(read_starts(log)) >= len(ids), worker, "every job to start")
            _wait_for(lambda: _succeeded(engine) >= len(ids), worker, "every job to commit")
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(60)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        starts = read_starts(log)
        problems = exactly_once_problems(starts, ids) + check_database(engine, len(ids))
        engine.close()
    if problems:
        raise BenchFailure("; ".join(problems))
    return Latency([(starts[i][0] - began) * 1000 for i, began in sent.items()])


def _succeeded(engine: Engine) -> int:
    return Counter(engine.store.job_count_by_state()).get("succeeded", 0)


def _wait_for(condition: Callable[[], bool], worker: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if worker.poll() is not None:
            err = worker.stderr.read().decode() if worker.stderr else ""
            raise BenchFailure(f"the worker exited {worker.returncode} before {what}: {err}")
        if time.monotonic() > deadline:
            raise BenchFailure(f"timed out waiting for {what}")
        time.sleep(0.005)
