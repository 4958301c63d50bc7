"""The jobs the chaos harness runs: keyed side effects in a separate database, via ctx.step.

``transfer`` (the standard lifecycle) makes one effect, and ``atransfer`` is its ``async
def`` twin (``await ctx.astep``); ``settle`` (a flow: debit, poll for a confirmation,
credit) makes two, one per work step.

The effect database (``$JOBCHARTS_CHAOS_EFFECTS``, a SQLite file) has three tables:
``executions`` logs every call of the effect function (at-least-once: a crash between the
effect and the step record re-runs it); ``effects`` holds one row per key (the keyed,
idempotent effect); ``applied`` logs each time a key's effect row was actually created, so
a duplicated effect would show as two ``applied`` rows for one key.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import threading
import time

from pydantic import BaseModel

from engine.context import JobContext
from engine.engine import Engine
from engine.retry import RetryPolicy
from statecharts import Poll, Work, flow

EFFECTS_ENV = "JOBCHARTS_CHAOS_EFFECTS"
MAX_ATTEMPTS = 10

engine = Engine(lease_seconds=float(os.environ.get("JOBCHARTS_CHAOS_LEASE", "2.0")))
_local = threading.local()


class Transfer(BaseModel):
    n: int


def effects_schema(conn: sqlite3.Connection) -> None:
    """Create the effect tables (idempotent)."""
    conn.executescript(
        """
        PRAGMA journal_mode=WAL;
        CREATE TABLE IF NOT EXISTS executions (key TEXT, job_id INTEGER, attempt INTEGER,
                                               pid INTEGER, at REAL);
        CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, job_id INTEGER, at REAL);
        CREATE TABLE IF NOT EXISTS applied (key TEXT, job_id INTEGER, pid INTEGER);
        """
    )


def _effects() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(os.environ[EFFECTS_ENV], timeout=30, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        _local.conn = conn
    return conn


def apply_effect(key: str, job_id: int, attempt: int) -> dict[str, str]:
    """The keyed side effect: create the key's effect row once, however often it is called."""
    conn = _effects()
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "INSERT INTO executions VALUES (?, ?, ?, ?, ?)",
            (key, job_id, attempt, os.getpid(), time.time()),
        )
        created = conn.execute(
            "INSERT OR IGNORE INTO effects VALUES (?, ?, ?)", (key, job_id, time.time())
        ).rowcount
        if created == 1:
            conn.execute("INSERT INTO applied VALUES (?, ?, ?)", (key, job_id, os.getpid()))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return {"effect": key}


@engine.job(
    payload=Transfer,
    idempotency=lambda p: f"transfer:{p.n}",
    retry=RetryPolicy(max_attempts=MAX_ATTEMPTS, base=0.05, factor=2.0, cap=1.0, jitter=0.5),
    timeout=10.0,
)
def transfer(ctx: JobContext, p: Transfer) -> dict[str, str]:
    """Sometimes fails before or after its keyed effect; the effect itself happens once."""
    time.sleep(random.uniform(0, 0.004))
    if random.random() < 0.05:
        raise ConnectionError("upstream unavailable before the effect")
    key = f"transfer:{p.n}"
    result = ctx.step("effect", lambda: apply_effect(key, ctx.job_id, ctx.attempt))
    if random.random() < 0.05:
        raise ConnectionError("upstream unavailable after the effect")
    return result


@engine.job(
    payload=Transfer,
    idempotency=lambda p: f"atransfer:{p.n}",
    retry=RetryPolicy(max_attempts=MAX_ATTEMPTS, base=0.05, factor=2.0, cap=1.0, jitter=0.5),
    timeout=10.0,
)
async def atransfer(ctx: JobContext, p: Transfer) -> dict[str, str]:
    """``transfer`` as an async handler: its keyed effect awaited through ``ctx.astep``."""
    await asyncio.sleep(random.uniform(0, 0.004))
    if random.random() < 0.05:
        raise ConnectionError("upstream unavailable before the effect")
    key = f"transfer:{p.n}"
    result: dict[str, str] = await ctx.astep(
        "effect", lambda: asyncio.to_thread(apply_effect, key, ctx.job_id, ctx.attempt)
    )
    if random.random() < 0.05:
        raise ConnectionError("upstream unavailable after the effect")
    return result


# A multi-step job for ``--flow`` runs: two keyed effects with a polling state between
# them, so kills land before, inside and between steps.
SETTLE = flow(
    "chaos_settle",
    Work("debit", on={"debited": "confirm"}),
    Poll("confirm", every=0.05, deadline=600, on={"confirmed": "credit"}),
    Work("credit", on={"credited": "succeeded"}),
    description="debit, wait for a confirmation, credit: each effect exactly once",
)
FLOW_EFFECTS = ("debit", "credit")  # the keyed effects of each settled job


def _keyed_step(ctx: JobContext, p: Transfer, effect: str) -> None:
    time.sleep(random.uniform(0, 0.004))
    if random.random() < 0.05:
        raise ConnectionError(f"upstream unavailable before the {effect}")
    key = f"{effect}:{p.n}"
    ctx.step(effect, lambda: apply_effect(key, ctx.job_id, ctx.attempt))
    if random.random() < 0.05:
        raise ConnectionError(f"upstream unavailable after the {effect}")


def _debit(ctx: JobContext, p: Transfer) -> str:
    _keyed_step(ctx, p, "debit")
    return "debited"


def _confirm(ctx: JobContext, p: Transfer) -> str | None:
    return "confirmed" if random.random() < 0.5 else None  # None: check again later


def _credit(ctx: JobContext, p: Transfer) -> str:
    _keyed_step(ctx, p, "credit")
    return "credited"


engine.flow(
    "settle",
    SETTLE,
    {"debit": _debit, "confirm": _confirm, "credit": _credit},
    payload=Transfer,
    idempotency=lambda p: f"settle:{p.n}",
    retry=RetryPolicy(max_attempts=MAX_ATTEMPTS, base=0.05, factor=2.0, cap=1.0, jitter=0.5),
    timeout=10.0,
)
