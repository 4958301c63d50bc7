"""A small app for the CLI tests: ``--app tests.engine.cli_app:engine`` (tests pass ``--db``).

Kinds: ``ship`` succeeds, ``reject`` raises Permanent, ``always_fails`` fails on both of its
two attempts, ``slow`` sleeps and then writes the marker file named in its payload, ``pay``
declares NoRetry.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, Field

from engine import Engine, JobContext, NoRetry, Permanent, RetryPolicy

engine = Engine()

TWO_QUICK_TRIES = RetryPolicy(max_attempts=2, base=0, jitter=0)


class Order(BaseModel):
    order_id: int = Field(ge=1)
    note: str = ""


class Delivery(BaseModel):
    address: str


class Slow(BaseModel):
    marker: str
    seconds: float = 1.5


@engine.job(payload=Order, idempotency=lambda p: f"ship:{p.order_id}")
def ship(ctx: JobContext, p: Order) -> dict[str, int]:
    return {"shipped": p.order_id}


@engine.job(payload=Delivery, idempotency=lambda p: f"reject:{p.address}")
def reject(ctx: JobContext, p: Delivery) -> None:
    raise Permanent(f"{p.address!r} is not a deliverable address")


@engine.job(payload=Order, idempotency=lambda p: f"fail:{p.order_id}", retry=TWO_QUICK_TRIES)
def always_fails(ctx: JobContext, p: Order) -> None:
    raise ConnectionError(f"upstream down for order {p.order_id}")


@engine.job(payload=Slow, idempotency=lambda p: f"slow:{p.marker}", timeout=60.0)
def slow(ctx: JobContext, p: Slow) -> str:
    Path(p.marker + ".started").write_text("started\n")  # the handler has really begun
    time.sleep(p.seconds)
    Path(p.marker).write_text("finished\n")
    return p.marker


@engine.job(
    payload=Order,
    idempotency=lambda p: f"pay:{p.order_id}",
    retry=NoRetry("a second charge could pay twice: the gateway takes no key"),
)
def pay(ctx: JobContext, p: Order) -> None:
    return None
