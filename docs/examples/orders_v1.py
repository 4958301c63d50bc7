"""Version 1 of an order flow, for docs/deploys.md: validate -> audit -> charge -> hold
(a 60 s cooling-off wait) -> pack_and_ship.

    jobcharts worker --app docs.examples.orders_v1:engine --db sqlite:///orders.db
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from engine import Engine, RetryPolicy
from statecharts import Wait, Work, flow

engine = Engine()


class Order(BaseModel):
    order_id: int


CHART = flow(
    "order",
    Work("validate", on={"ok": "audit"}),
    Work("audit", on={"audited": "charge"}),
    Work("charge", on={"charged": "hold"}),
    Wait("hold", delay=60, then="pack_and_ship"),
    Work("pack_and_ship", on={"shipped": "succeeded"}),
    label="v1",
)


def step(outcome: str) -> Any:
    def run(ctx: Any, order: Order) -> str:
        return outcome

    return run


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
    retry=RetryPolicy(max_attempts=5),
)
