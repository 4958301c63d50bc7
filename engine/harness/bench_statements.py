"""Statements per job: what one enqueue and one job's run (claim, start, commit) send to
the database, counted by the driver itself.

SQLite: sqlite3's trace callback sees every statement, BEGIN and COMMIT included.
PostgreSQL: libpq's protocol trace of every pooled connection; a statement is a simple
``Query`` or an extended-protocol ``Execute``, a round trip a ``Sync`` or a ``Query``.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.pool import Pool

from engine.harness.bench_worker import (
    BenchFailure,
    bench_engine,
    check_database,
    exactly_once_problems,
)
from engine.harness.scratch import scratch_database
from engine.store.connect import backend_name
from engine.worker import DEFAULT_THREADS, Worker


@dataclass(frozen=True)
class Counts:
    statements: int
    round_trips: int


@dataclass(frozen=True)
class PerJob:
    enqueue: Counts  # one enqueue() call per job
    run: Counts  # claim, start and commit, by a worker at its defaults

    def text(self, jobs: int) -> str:
        return (
            f"enqueue {self.enqueue.statements / jobs:.2f} statements "
            f"({self.enqueue.round_trips / jobs:.2f} round trips); "
            f"run {self.run.statements / jobs:.2f} ({self.run.round_trips / jobs:.2f})"
        )


class _Counter:
    """Counts what every new pooled connection sends, from when it is installed."""

    def __init__(self, postgres: bool, trace_path: Path) -> None:
        self.postgres = postgres
        self.trace_path = trace_path
        self.sqlite = 0
        self._trace = trace_path.open("w") if postgres else None
        self._traced: list[Any] = []  # untraced at close: libpq keeps the descriptor number

    def on_connect(self, dbapi_connection: Any, _record: Any) -> None:
        if self._trace is not None:
            from psycopg import pq

            pgconn = dbapi_connection.pgconn
            pgconn.trace(self._trace.fileno())
            pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
            self._traced.append(pgconn)
        else:
            dbapi_connection.set_trace_callback(self._count)

    def _count(self, _sql: str) -> None:
        self.sqlite += 1

    def snapshot(self) -> Counts:
        if self._trace is None:
            return Counts(self.sqlite, self.sqlite)
        self._trace.flush()
        sent: Counter[str] = Counter()
        for line in self.trace_path.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) > 2 and parts[0] == "F":
                sent[parts[2].split()[0]] += 1
        return Counts(sent["Query"] + sent["Execute"], sent["Query"] + sent["Sync"])

    def close(self) -> None:
        """Stop tracing first: a connection still open after this (a pool's) would go on
        writing to the descriptor number, which the next file opened reuses."""
        for pgconn in self._traced:
            pgconn.untrace()  # also safe on a connection already closed
        self._traced.clear()
        if self._trace is not None:
            self._trace.close()


@contextmanager
def _counting(url: str, trace_path: Path) -> Iterator[_Counter]:
    counter = _Counter(backend_name(url) == "postgresql", trace_path)
    event.listen(Pool, "connect", counter.on_connect)
    try:
        yield counter
    finally:
        event.remove(Pool, "connect", counter.on_connect)
        counter.close()


def per_job(db: str | None, jobs: int = 500) -> PerJob:
    """Count the statements of ``jobs`` single enqueues, then of their run by an
    in-process worker at the defaults (``DEFAULT_THREADS`` handler threads)."""
    with (
        scratch_database(db) as url,
        tempfile.TemporaryDirectory() as tmp,
        _counting(url, Path(tmp) / "trace.txt") as counter,
    ):
        ran: dict[int, list[float]] = {}

        def noop(ctx: Any, _p: Any) -> None:
            ran.setdefault(ctx.job_id, []).append(time.time())

        engine = bench_engine(url, noop)
        try:
            engine.store  # noqa: B018 - open the schema before counting
            start = counter.snapshot()
            ids = [engine.enqueue("noop", {"n": n}) for n in range(jobs)]
            enqueued = counter.snapshot()
            Worker(engine, concurrency=DEFAULT_THREADS, poll_interval=0.05).run(until_idle=True)
            done = counter.snapshot()
            problems = exactly_once_problems(ran, ids) + check_database(engine, jobs)
        finally:
            engine.close()
    if problems:
        raise BenchFailure("; ".join(problems))
    return PerJob(
        Counts(enqueued.statements - start.statements, enqueued.round_trips - start.round_trips),
        Counts(done.statements - enqueued.statements, done.round_trips - enqueued.round_trips),
    )
