"""``jobcharts bench``: the scenarios of the hot path, each on a fresh database (a SQLite
file, or a new schema of the given PostgreSQL database), each run checked for exactly-once.

- ``enqueue``: one ``enqueue()`` call per job and 1,000 per ``enqueue_many()``, keyed or not;
- ``drain``: one ``jobcharts worker`` at its defaults drains the jobs (and with ``--flags``);
- ``processes``: the same with ``--processes K``, and its ratio to one process;
- ``latency``: enqueue to handler start with an idle worker, p50 and p99;
- ``statements``: statements and round trips per enqueue and per job run;
- ``claim``: the time of one claim of 100 due jobs beside tables of growing size;
- ``async``: ``await aenqueue()`` (one task, and ten at once) and ``aenqueue_many()``, and
  a worker draining ``async def`` no-op handlers, beside the sync figures;
- ``observability``: the drain with metrics served (``--metrics-port``) and with spans on
  (OpenTelemetry's SDK, a batch processor), each against the drain without.

Figures are medians over ``--repeat`` runs; a run that loses, repeats or leaves work fails
the bench instead of being reported.
"""

from __future__ import annotations

import os
import platform
import shlex
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from pydantic import BaseModel

from engine.engine import Engine
from engine.harness import bench_app, bench_enqueue, bench_statements, bench_worker
from engine.harness.bench_worker import BenchFailure
from engine.harness.scratch import scratch_database
from engine.registry import Invariant
from engine.store.audit import BulkJob
from engine.store.connect import redact

__all__ = ["SCENARIOS", "BenchFailure", "claim_cost", "claim_cost_fresh", "run_scenarios"]

SCENARIOS = (
    "enqueue",
    "drain",
    "processes",
    "latency",
    "statements",
    "claim",
    "async",
    "observability",
)


class Noop(BaseModel):
    n: int


def run_scenarios(
    db: str | None,
    scenarios: Sequence[str],
    *,
    jobs: int,
    repeat: int,
    flags: str,
    processes: int,
    claim_rows: Sequence[int],
    echo: Callable[[str], None],
) -> None:
    """Run each scenario and print its figures as soon as they are known."""
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; the scenarios are {list(SCENARIOS)}")
    echo(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; database: "
        + (redact(db) if db else "a fresh SQLite file per run (WAL, synchronous=FULL)")
    )
    if set(scenarios) - {"claim"}:
        echo(f"{jobs:,} no-op jobs per run, medians of {repeat}; every run checked exactly-once")
    if "enqueue" in scenarios:
        figures = _median_figures(lambda: _enqueue_once(db, min(jobs, 2000)), repeat)
        echo(
            f"enqueue(), one call per job:     {figures['plain single']:>9,.0f} jobs/s"
            f"  (keyed: {figures['keyed single']:,.0f})"
        )
        echo(
            f"enqueue_many(), 1,000 per call:  {figures['plain bulk']:>9,.0f} jobs/s"
            f"  (keyed: {figures['keyed bulk']:,.0f})"
        )
    one = None
    if "drain" in scenarios or "processes" in scenarios:
        one = _drain_median(db, jobs, repeat, [])
        echo(f"drain, worker at its defaults:   {one:>9,.0f} jobs/s")
    if "drain" in scenarios and flags:
        rate = _drain_median(db, jobs, repeat, shlex.split(flags))
        echo(f"drain, worker {flags}: {rate:,.0f} jobs/s  (x{rate / (one or rate):.2f})")
    if "processes" in scenarios and one:
        rate = _drain_median(db, jobs, repeat, ["--processes", str(processes)])
        echo(
            f"drain, worker --processes {processes}:     {rate:>9,.0f} jobs/s"
            f"  (x{rate / one:.2f} of one process)"
        )
    if "latency" in scenarios:
        lat = bench_worker.latency(db)
        echo(
            f"latency, idle worker:            p50 {lat.quantile(50):.1f} ms, p99 "
            f"{lat.quantile(99):.1f} ms  ({len(lat.samples)} jobs, one every 20 ms)"
        )
    if "statements" in scenarios:
        counts = bench_statements.per_job(db, min(jobs, 500))
        echo(f"per job:                         {counts.text(min(jobs, 500))}")
    if "async" in scenarios:
        figures = _median_figures(lambda: _async_enqueue_once(db, min(jobs, 2000)), repeat)
        echo(
            f"await aenqueue(), one per job:   {figures['async single']:>9,.0f} jobs/s"
            f"  (10 tasks at once: {figures['async single, 10 tasks']:,.0f})"
        )
        echo(f"await aenqueue_many(), 1,000:    {figures['async bulk']:>9,.0f} jobs/s")
        rate = statistics.median(
            bench_worker.drain(db, jobs, [], kind="anoop").rate for _ in range(repeat)
        )
        echo(
            f"drain, async def handlers:       {rate:>9,.0f} jobs/s"
            + (f"  (x{rate / one:.2f} of sync)" if one else "")
        )
    if "observability" in scenarios:
        plain = one or _drain_median(db, jobs, repeat, [])
        port = _free_port()
        metered = _drain_median(db, jobs, repeat, ["--metrics-port", str(port)])
        traced = statistics.median(
            bench_worker.drain(db, jobs, [], env={bench_app.TRACING_ENV: "1"}).rate
            for _ in range(repeat)
        )
        echo(f"drain, metrics served:           {metered:>9,.0f} jobs/s  (x{metered / plain:.2f})")
        echo(f"drain, spans on (OTel SDK):      {traced:>9,.0f} jobs/s  (x{traced / plain:.2f})")
    if "claim" in scenarios:
        for rows in claim_rows:
            ms = claim_cost_fresh(rows, db)
            echo(f"claim of 100 due jobs beside {rows:>9,} rows: median {ms:.2f} ms")


def _enqueue_once(db: str | None, jobs: int) -> dict[str, float]:
    with scratch_database(db) as url:
        return bench_enqueue.measure(url, jobs, runs=1)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _async_enqueue_once(db: str | None, jobs: int) -> dict[str, float]:
    with scratch_database(db) as url:
        return bench_enqueue.measure_async(url, jobs)


def _median_figures(run: Callable[[], dict[str, float]], repeat: int) -> dict[str, float]:
    results = [run() for _ in range(repeat)]
    return {name: statistics.median(r[name] for r in results) for name in results[0]}


def _drain_median(db: str | None, jobs: int, repeat: int, flags: list[str]) -> float:
    return statistics.median(bench_worker.drain(db, jobs, flags).rate for _ in range(repeat))


def claim_cost(
    url: str, rows: int, *, due: int = 2000, batch: int = 100, repeat: int = 30
) -> float:
    """Median milliseconds to claim ``batch`` due jobs from a table of ``rows`` jobs.

    The table holds ``rows - due`` finished jobs (history waiting to be pruned) and ``due``
    pending ones. Each measured claim is handed back (released) so the next finds as many.
    """
    from datetime import UTC, datetime, timedelta
    from itertools import chain
    from itertools import repeat as times

    engine = Engine(url, batch_size=batch)
    engine.job(payload=Noop, idempotency=Invariant("a no-op"), kind="noop")(lambda ctx, p: None)
    now = datetime.now(UTC)
    finished = BulkJob(
        kind="noop",
        chart="lifecycle",
        state="succeeded",
        payload={"n": 0},
        attempt=1,
        max_attempts=5,
        priority=0,
        queue="default",
        version=2,
        correlation_id="bench",
        created_at=now,
        updated_at=now,
        due_at=None,
        finished_at=now,
    )
    pending = replace(finished, state="pending", attempt=0, version=0, finished_at=None)
    engine.store.job_insert_bulk(
        chain(
            times(finished, max(rows - due, 0)),
            (replace(pending, due_at=now - timedelta(seconds=i % 60)) for i in range(due)),
        )
    )
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        claimed = engine.claim(engine.now(), batch)
        samples.append((time.perf_counter() - started) * 1000)
        engine.hand_back(claimed.jobs, started=False, now=engine.now())
    engine.close()
    return statistics.median(samples)


def claim_cost_fresh(rows: int, db: str | None) -> float:
    """``claim_cost`` in a fresh SQLite file, or a fresh schema of the PostgreSQL ``db``."""
    with scratch_database(db, "claim") as url:
        return claim_cost(url, rows)
