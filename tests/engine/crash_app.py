"""An app for the bad-conditions tests' worker subprocesses: ``--app tests.engine.crash_app``.

Kinds: ``suicide`` SIGKILLs its own worker process on every attempt (two attempts allowed),
``sleepy`` sleeps and then records a ``late`` step, ``record_run`` appends
(job_id, attempt, pid) to the ``runs`` table of the SQLite file named in its payload.
Tests build their own engine on their database with ``make(url)``; the CLI binds
``engine`` to ``--db``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from contextlib import closing

from pydantic import BaseModel

from engine import Engine, Invariant, JobContext, RetryPolicy

TWO_QUICK_TRIES = RetryPolicy(max_attempts=2, base=0, jitter=0)


class Victim(BaseModel):
    n: int


class Sleepy(BaseModel):
    tag: str
    seconds: float


class Run(BaseModel):
    n: int
    runs: str  # path of the SQLite file holding the ``runs`` table
    pause: float = 0.0


def make(url: str | None = None) -> Engine:
    """An engine with the three kinds, on ``url`` (or the CLI's ``--db``)."""
    engine = Engine(url)

    @engine.job(payload=Victim, idempotency=lambda p: f"suicide:{p.n}", retry=TWO_QUICK_TRIES)
    def suicide(ctx: JobContext, p: Victim) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    @engine.job(payload=Sleepy, idempotency=lambda p: f"sleepy:{p.tag}", timeout=60.0)
    def sleepy(ctx: JobContext, p: Sleepy) -> str:
        time.sleep(p.seconds)
        return ctx.step("late", lambda: f"{p.tag} finished")

    @engine.job(
        payload=Run,
        idempotency=Invariant("the runs table is what the test inspects for repeats"),
    )
    def record_run(ctx: JobContext, p: Run) -> int:
        time.sleep(p.pause)
        with closing(sqlite3.connect(p.runs, timeout=30)) as conn, conn:
            conn.execute(
                "INSERT INTO runs (job_id, attempt, pid) VALUES (?, ?, ?)",
                (ctx.job_id, ctx.attempt, os.getpid()),
            )
        return os.getpid()

    return engine


engine = make()
