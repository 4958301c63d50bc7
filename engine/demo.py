"""The built-in demo app: jobs that succeed, recover, fail permanently and exhaust retries,
and a multi-step flow that ships an order or, when the carrier never comes, compensates.

``jobcharts demo`` enqueues a fresh batch (a new run id keeps dedupe keys unique per run),
drains it on the embedded default database and prints what happened to every job.
"""

from __future__ import annotations

import uuid

from pydantic import BaseModel

from engine.engine import Engine
from engine.errors import Permanent
from engine.registry import Invariant
from engine.retry import RetryPolicy
from statecharts import Final, Poll, Work, flow

FAST_RETRY = RetryPolicy(max_attempts=4, base=0.05, factor=2.0, cap=1.0, jitter=0.1)


class Greeting(BaseModel):
    run: str
    name: str


class Transfer(BaseModel):
    run: str
    transfer_id: int
    fails_before_success: int = 0


class Report(BaseModel):
    run: str
    address: str


class Shipment(BaseModel):
    run: str
    order_id: int
    carrier_comes: bool


# reserve stock -> wait for the carrier (a check every 0.1 s, at most 1 s) -> notify; if the
# carrier never comes, the deadline's exit releases the stock.
SHIPPING = flow(
    "shipping",
    Work("reserve", on={"reserved": "await_pickup"}),
    Poll(
        "await_pickup",
        every=0.1,
        deadline=1.0,
        on={"picked_up": "notify"},
        on_deadline="release_stock",
        on_cancel="release_stock",
    ),
    Work("notify", on={"notified": "succeeded"}),
    Work("release_stock", on={"released": "not_shipped"}, on_cancel=None),
    Final("not_shipped", success=False, description="compensated: the stock was released"),
)


def build(url: str | None = None) -> Engine:
    """An engine with the demo's four job kinds registered."""
    engine = Engine(url)

    @engine.job(payload=Greeting, idempotency=lambda p: f"greet:{p.run}:{p.name}", retry=FAST_RETRY)
    def greet(ctx, p: Greeting) -> str:  # type: ignore[no-untyped-def]
        return f"hello, {p.name}"

    @engine.job(
        payload=Transfer,
        idempotency=lambda p: f"transfer:{p.run}:{p.transfer_id}",
        retry=FAST_RETRY,
    )
    def flaky_transfer(ctx, p: Transfer) -> dict[str, int]:  # type: ignore[no-untyped-def]
        # The ledger entry is a step: written once, replayed on the retries that follow.
        entry = ctx.step("ledger", lambda: {"entry": p.transfer_id * 100})
        if ctx.attempt <= p.fails_before_success:
            raise ConnectionError(f"bank API timed out (attempt {ctx.attempt})")
        return entry  # type: ignore[no-any-return]

    @engine.job(payload=Report, idempotency=Invariant("rendering a report twice is harmless"))
    def email_report(ctx, p: Report) -> None:  # type: ignore[no-untyped-def]
        if "@" not in p.address:
            raise Permanent(f"{p.address!r} is not an email address; retrying cannot fix it")

    @engine.job(payload=Greeting, idempotency=lambda p: f"sync:{p.run}:{p.name}", retry=FAST_RETRY)
    def sync_partner(ctx, p: Greeting) -> None:  # type: ignore[no-untyped-def]
        raise TimeoutError(f"partner {p.name} never answers")

    def reserve(ctx, p: Shipment) -> str:  # type: ignore[no-untyped-def]
        ctx.step("reserve", lambda: {"reserved": p.order_id})
        return "reserved"

    def await_pickup(ctx, p: Shipment) -> str | None:  # type: ignore[no-untyped-def]
        return "picked_up" if p.carrier_comes else None  # None: check again later

    def notify(ctx, p: Shipment) -> str:  # type: ignore[no-untyped-def]
        ctx.step("mail", lambda: f"order {p.order_id} is on its way")
        return "notified"

    def release_stock(ctx, p: Shipment) -> str:  # type: ignore[no-untyped-def]
        ctx.step("release", lambda: {"released": p.order_id})
        return "released"

    engine.flow(
        "ship_order",
        SHIPPING,
        {
            "reserve": reserve,
            "await_pickup": await_pickup,
            "notify": notify,
            "release_stock": release_stock,
        },
        payload=Shipment,
        idempotency=lambda p: f"ship:{p.run}:{p.order_id}",
        retry=FAST_RETRY,
    )
    return engine


def enqueue_batch(engine: Engine) -> list[int]:
    """Enqueue one run's mix of jobs; returns their ids (one enqueue is a deliberate dupe)."""
    run = uuid.uuid4().hex[:8]
    ids = [engine.enqueue("greet", {"run": run, "name": name}) for name in ("ada", "alan", "grace")]
    ids.append(engine.enqueue("greet", {"run": run, "name": "ada"}))  # deduplicated
    ids += [
        engine.enqueue("flaky_transfer", {"run": run, "transfer_id": n, "fails_before_success": n})
        for n in (1, 2)
    ]
    ids.append(engine.enqueue("email_report", {"run": run, "address": "ops@example.com"}))
    ids.append(engine.enqueue("email_report", {"run": run, "address": "not-an-address"}))
    ids.append(engine.enqueue("sync_partner", {"run": run, "name": "acme"}))
    ids += [
        engine.enqueue("ship_order", {"run": run, "order_id": n, "carrier_comes": n == 1})
        for n in (1, 2)
    ]
    return ids
