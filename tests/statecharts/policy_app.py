"""The order flow of docs/deploys.md registered twice, with 5 and with 3 attempts per
step: `jobcharts diff --against-app` shows the lowered retry budgets."""

from __future__ import annotations

from docs.examples.orders_v1 import CHART, Order, step
from engine import Engine, RetryPolicy


def build(attempts: int) -> Engine:
    engine = Engine()
    engine.flow(
        "order",
        CHART,
        {
            "validate": step("ok"),
            "audit": step("audited"),
            "charge": step("charged"),
            "pack_and_ship": step("shipped"),
        },
        payload=Order,
        idempotency=lambda o: f"order:{o.order_id}",
        retry=RetryPolicy(max_attempts=attempts),
    )
    return engine


five = build(5)
three = build(3)
