"""A test app of async handlers (beside one sync handler): ``--app tests.engine.async_app:engine``.

Kinds: ``fetch`` awaits and returns, failing first when asked; ``sleepy`` awaits past its
timeout on its first attempt; ``crash`` kills its process on its first attempt; ``ledger``
records an async step and fails once; ``watch`` polls for an operator's cancel; ``sync_one``
is a plain handler; ``settle`` is a flow with an async polling check.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pydantic import BaseModel

from engine import Cancelled, Engine, JobContext, Permanent, RetryPolicy
from statecharts import Poll, Work, flow

engine = Engine()
QUICK = RetryPolicy(max_attempts=3, base=0, jitter=0)
CALLS: dict[str, int] = {}  # how often each step's function really ran (in this process)
STATE: dict[str, Any] = {}  # what the handlers saw, for the tests


class Job(BaseModel):
    n: int
    fail_first: bool = False
    permanent: bool = False


@engine.job(payload=Job, idempotency=lambda p: f"fetch:{p.n}", retry=QUICK)
async def fetch(ctx: JobContext, p: Job) -> dict[str, int]:
    await asyncio.sleep(0.01)
    if p.permanent:
        raise Permanent("refused")
    if p.fail_first and ctx.attempt == 1:
        raise ConnectionError("upstream down")
    return {"n": p.n, "attempt": ctx.attempt}


@engine.job(payload=Job, idempotency=lambda p: f"sleepy:{p.n}", retry=QUICK, timeout=0.3)
async def sleepy(ctx: JobContext, p: Job) -> str:
    if ctx.attempt == 1:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            STATE[f"sleepy:{p.n}:cancelled"] = True  # the task really was cancelled
            raise
        STATE[f"sleepy:{p.n}:late"] = True  # never reached
    return "on time"


@engine.job(payload=Job, idempotency=lambda p: f"crash:{p.n}", retry=QUICK, timeout=5)
async def crash(ctx: JobContext, p: Job) -> int:
    await asyncio.sleep(0.01)
    if ctx.attempt == 1:
        os._exit(9)  # the handler takes its process down (process isolation)
    return os.getpid()


@engine.job(payload=Job, idempotency=lambda p: f"ledger:{p.n}", retry=QUICK)
async def ledger(ctx: JobContext, p: Job) -> Any:
    async def charge() -> dict[str, str]:
        CALLS[f"charge:{p.n}"] = CALLS.get(f"charge:{p.n}", 0) + 1
        await asyncio.sleep(0.01)
        return {"charge": f"ch_{p.n}"}

    receipt = await ctx.astep("charge", charge)
    if ctx.attempt == 1:
        raise TimeoutError("the mailer timed out")
    return receipt


@engine.job(payload=Job, idempotency=lambda p: f"watch:{p.n}", retry=QUICK, timeout=30)
async def watch(ctx: JobContext, p: Job) -> str:
    STATE[f"watch:{p.n}:started"] = True
    for _ in range(300):
        if await ctx.acancelled():
            STATE[f"watch:{p.n}:saw_cancel"] = True
            raise Cancelled("an operator asked: stop before the next batch")
        await asyncio.sleep(0.02)
    return "never cancelled"


@engine.job(payload=Job, idempotency=lambda p: f"sync:{p.n}", retry=QUICK)
def sync_one(ctx: JobContext, p: Job) -> str:
    return "sync"


async def charge_step(ctx: JobContext, p: Job) -> str:
    await asyncio.sleep(0.01)
    return "charged"


async def settled_check(ctx: JobContext, p: Job) -> str | None:
    key = f"settle:{p.n}"
    CALLS[key] = CALLS.get(key, 0) + 1
    await asyncio.sleep(0.01)
    return "settled" if CALLS[key] >= 3 else None  # "not yet" twice


SETTLE = flow(
    "settle",
    Work("charge", on={"charged": "await_settlement"}),
    Poll("await_settlement", every=1, deadline=100, on={"settled": "succeeded"}),
)
engine.flow(
    "settle",
    SETTLE,
    {"charge": charge_step, "await_settlement": settled_check},
    payload=Job,
    idempotency=lambda p: f"settle:{p.n}",
    retry=QUICK,
)
