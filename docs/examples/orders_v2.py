"""Version 2 of the order flow in docs/deploys.md: ``hold`` is renamed ``cool_off``,
``pack_and_ship`` is split into ``pack`` and ``ship``, and ``audit`` is removed. The
migrations say where the jobs version 1 left in those states go.

``engine`` declares them; ``engine_without_migrations`` is the same deploy without them,
which ``jobcharts check --db`` refuses.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from engine import Engine, RetryPolicy
from statecharts import Chart, Migration, Wait, Work, flow


class Order(BaseModel):
    order_id: int


MIGRATIONS = [
    Migration("hold", "cool_off", keep_due=True),  # renamed: the wait keeps its end
    Migration("pack_and_ship", "pack"),  # split: its jobs start with the first half
    Migration("audit", "charge", note="audits moved to the warehouse system"),  # removed
]


def chart(migrations: list[Migration]) -> Chart:
    return flow(
        "order",
        Work("validate", on={"ok": "charge"}),
        Work("charge", on={"charged": "cool_off"}),
        Wait("cool_off", delay=60, then="pack"),
        Work("pack", on={"packed": "ship"}),
        Work("ship", on={"shipped": "succeeded"}),
        migrations=migrations,
        label="v2",
    )


def step(outcome: str) -> Any:
    def run(ctx: Any, order: Order) -> str:
        return outcome

    return run


def build(migrations: list[Migration]) -> Engine:
    engine = Engine()
    engine.flow(
        "order",
        chart(migrations),
        {
            "validate": step("ok"),
            "charge": step("charged"),
            "pack": step("packed"),
            "ship": step("shipped"),
        },
        payload=Order,
        idempotency=lambda o: f"order:{o.order_id}",
        retry=RetryPolicy(max_attempts=5),
    )
    return engine


engine = build(MIGRATIONS)
engine_without_migrations = build([])
