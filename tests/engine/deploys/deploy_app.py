"""One order flow in two versions, for deploy tests: v2 renames ``hold`` to ``cool_off``,
splits ``pack_and_ship`` into ``pack`` and ``ship``, and removes ``audit``.

``build(version, clock=..., migrations=...)`` gives an engine registering that version;
every handler records (job id, state, version) in ``EFFECTS`` when its work happens, so a
test can check that nothing ran twice. A payload's ``stop_at`` makes the v1 handler of
that state fail (the job stays there, due again later): how a test parks jobs in states.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from engine import Engine, FrozenClock, Permanent, RetryPolicy
from statecharts import Chart, Migration, Wait, Work, flow

EFFECTS: list[tuple[int, str, str]] = []
MIGRATIONS = {"hold": "cool_off", "pack_and_ship": "pack", "audit": "charge"}


class Order(BaseModel):
    n: int
    stop_at: str | None = None
    permanent: bool = False


def chart_v1() -> Chart:
    return flow(
        "order",
        Work("validate", on={"ok": "audit"}),
        Work("audit", on={"audited": "charge"}),
        Work("charge", on={"charged": "hold"}),
        Wait("hold", delay=60, then="pack_and_ship"),
        Work("pack_and_ship", on={"shipped": "succeeded"}),
        label="v1",
    )


def chart_v2(migrations: dict[str, str] | list[Migration] | None = None) -> Chart:
    return flow(
        "order",
        Work("validate", on={"ok": "charge"}),
        Work("charge", on={"charged": "cool_off"}),
        Wait("cool_off", delay=60, then="pack"),
        Work("pack", on={"packed": "ship"}),
        Work("ship", on={"shipped": "succeeded"}),
        migrations=migrations or {},
        label="v2",
    )


def _handler(state: str, outcome: str, version: str) -> Any:
    def run(ctx: Any, order: Order) -> str:
        if order.permanent:
            raise Permanent("refused")
        if version == "v1" and order.stop_at == state:
            raise RuntimeError(f"parked in {state}")
        EFFECTS.append((ctx.job_id, state, version))
        return outcome

    return run


def build(
    version: str,
    url: str,
    clock: FrozenClock | None = None,
    migrations: bool | list[Migration] = True,
) -> Engine:
    """An engine of app ``version`` ("v1" or "v2") on ``url``; v2 with ``MIGRATIONS``,
    none (False), or the migrations given."""
    engine = Engine(url, clock=clock, seed=3, lease_seconds=30)
    if version == "v1":
        chart = chart_v1()
        steps = {
            "validate": "ok",
            "audit": "audited",
            "charge": "charged",
            "pack_and_ship": "shipped",
        }
    else:
        declared = MIGRATIONS if migrations is True else migrations or None
        chart = chart_v2(declared)
        steps = {"validate": "ok", "charge": "charged", "pack": "packed", "ship": "shipped"}
    engine.flow(
        "order",
        chart,
        {state: _handler(state, outcome, version) for state, outcome in steps.items()},
        payload=Order,
        idempotency=lambda o: f"order:{o.n}",
        retry=RetryPolicy(max_attempts=5, base=100, jitter=0),
    )
    return engine


# For the command line: ``--app tests.engine.deploys.deploy_app:v2`` (the URL by --db).
v1 = build("v1", "sqlite:///unused-v1.db")
v2 = build("v2", "sqlite:///unused-v2.db")
v2_without_migrations = build("v2", "sqlite:///unused-v2.db", migrations=False)
