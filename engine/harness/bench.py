"""``jobcharts bench``: measure enqueue and drain throughput on a fresh database.

Each repeat uses a new SQLite file (or the given URL, which must be empty), enqueues ``jobs``
no-op jobs in chunks, drains them with one in-process tick loop, and checks that every job
succeeded with its full history persisted (3 events per job). Medians are reported.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from pydantic import BaseModel

from engine.engine import Engine
from engine.registry import Invariant
from engine.store.audit import BulkJob


class Noop(BaseModel):
    n: int


@dataclass(frozen=True)
class BenchRun:
    jobs: int
    enqueue_seconds: float
    drain_seconds: float

    @property
    def enqueue_rate(self) -> float:
        return self.jobs / self.enqueue_seconds

    @property
    def drain_rate(self) -> float:
        return self.jobs / self.drain_seconds


def run_once(url: str, jobs: int, batch: int, chunk: int = 1000) -> BenchRun:
    """Enqueue then drain ``jobs`` no-op jobs on ``url``; verify every row and event."""
    engine = Engine(url, batch_size=batch)
    engine.job(payload=Noop, idempotency=Invariant("a no-op"), kind="noop")(lambda ctx, p: None)
    before_counts, before_events = _totals(engine)  # --db with --repeat reuses a database
    started = time.perf_counter()
    for first in range(0, jobs, chunk):
        engine.enqueue_many("noop", [{"n": n} for n in range(first, min(first + chunk, jobs))])
    enqueued = time.perf_counter()
    report = engine.run_until_idle()
    drained = time.perf_counter()
    after_counts, after_events = _totals(engine)
    engine.close()
    counts = {
        state: n - before_counts.get(state, 0)
        for state, n in after_counts.items()
        if n != before_counts.get(state, 0)
    }
    events = after_events - before_events
    if report.succeeded != jobs or counts != {"succeeded": jobs} or events != 3 * jobs:
        raise RuntimeError(
            f"bench run lost work: succeeded={report.succeeded} states={counts} events={events}"
        )
    return BenchRun(jobs, enqueued - started, drained - enqueued)


def _totals(engine: Engine) -> tuple[dict[str, int], int]:
    """Jobs per state and events in all (opens the database and its schema first)."""
    counts = engine.store.job_count_by_state()
    return counts, engine.store.audit_event_count()


def run(jobs: int, batch: int, repeat: int, url: str | None = None) -> list[BenchRun]:
    runs = []
    for _ in range(repeat):
        if url:
            runs.append(run_once(url, jobs, batch))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run_once(f"sqlite:///{Path(tmp) / 'bench.db'}", jobs, batch))
    return runs


def summary(runs: list[BenchRun], batch: int, url: str | None) -> str:
    drain = statistics.median(r.drain_rate for r in runs)
    enqueue = statistics.median(r.enqueue_rate for r in runs)
    lines = [
        f"machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        f"database: {url or 'fresh SQLite file per run (WAL, synchronous=FULL)'}; batch {batch}",
        f"runs: {len(runs)} x {runs[0].jobs} no-op jobs, every transition and event persisted",
        "drain   jobs/s: "
        + ", ".join(f"{r.drain_rate:,.0f}" for r in runs)
        + f"  (median {drain:,.0f})",
        "enqueue jobs/s: "
        + ", ".join(f"{r.enqueue_rate:,.0f}" for r in runs)
        + f"  (median {enqueue:,.0f}, in transactions of 1000)",
    ]
    return "\n".join(lines)


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
    if db:
        from engine.harness.chaos import fresh_database

        return claim_cost(fresh_database(db), rows)
    with tempfile.TemporaryDirectory() as tmp:
        return claim_cost(f"sqlite:///{Path(tmp) / 'claim.db'}", rows)
