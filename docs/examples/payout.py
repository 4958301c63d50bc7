"""An order payout as a multi-step job: charge -> await settlement (polling) -> notify.

If the payment has not settled by the deadline (or it bounces, or an operator cancels the
payout once the card was charged), the flow compensates by refunding the charge. Each
handler stays thin: it calls an adapter (the payment gateway, the mailer) and returns the
outcome to take. Effects go through ``ctx.step`` with keys derived from the order, so a
crash or a retry never charges, refunds or mails twice.

Run it: ``python -m docs.examples.payout`` (an in-memory gateway, a frozen clock).
Draw it: ``jobcharts render payout --app docs.examples.payout:engine --format mermaid``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from engine import Engine, FrozenClock, JobContext, RetryPolicy, StepHandler
from engine.registry import JobSpec
from statecharts import Chart, Final, Poll, Work, flow


def payout_chart(every: float = 60, deadline: float = 3600) -> Chart:
    """The payout flow; its polling timers are parameters so tests can run it fast."""
    return flow(
        "payout",
        Work(
            "charge",
            on={"charged": "await_settlement", "declined": "declined"},
            on_cancel="refund",  # a crash may have charged the card without a record
            description="charge the card, keyed by the order",
        ),
        Poll(
            "await_settlement",
            every=every,
            deadline=deadline,
            on={"settled": "notify", "bounced": "refund"},
            on_deadline="refund",
            on_cancel="refund",
            description="ask the gateway every minute, for at most an hour",
        ),
        Work(
            "notify",
            on={"notified": "succeeded"},
            on_cancel="refund",
            description="mail the customer",
        ),
        Work(
            "refund",
            on={"refunded": "refunded", "nothing_charged": "cancelled"},
            on_cancel=None,  # a compensation runs to its end
            description="compensate: refund the charge, if there is one",
        ),
        Final("declined", success=False, description="the card was declined; nothing to undo"),
        Final("refunded", success=False, description="compensated: the charge was refunded"),
        description="Pay out an order: charge, wait for settlement, notify; refund on timeout.",
    )


PAYOUT = payout_chart()


class Order(BaseModel):
    order_id: int
    amount_cents: int
    email: str


class Gateway(Protocol):
    """The payment provider: every call that moves money takes an idempotency key."""

    def charge(self, key: str, amount_cents: int) -> dict[str, Any]: ...
    def find(self, key: str) -> dict[str, Any] | None: ...  # the charge made with this key
    def status(self, charge_id: str) -> str: ...  # "pending" | "settled" | "bounced"
    def refund(self, key: str, charge_id: str) -> dict[str, Any]: ...


class Mailer(Protocol):
    def send(self, key: str, to: str, text: str) -> None: ...


def register(engine: Engine, gateway: Gateway, mailer: Mailer, chart: Chart = PAYOUT) -> JobSpec:
    """Register the ``payout`` kind on ``engine`` with its four handlers."""

    def charge(ctx: JobContext, order: Order) -> Literal["charged", "declined"]:
        key = f"payout:{order.order_id}:charge"
        result = ctx.step("charge", lambda: gateway.charge(key, order.amount_cents))
        return "charged" if result["ok"] else "declined"

    def await_settlement(ctx: JobContext, order: Order) -> Literal["settled", "bounced"] | None:
        status = gateway.status(ctx.recorded("charge")["charge_id"])
        if status == "settled":
            return "settled"
        if status == "bounced":
            return "bounced"
        return None  # not yet: check again in a minute, until the deadline

    def notify(ctx: JobContext, order: Order) -> None:
        key = f"payout:{order.order_id}:mail"
        ctx.step("mail", lambda: mailer.send(key, order.email, "Your order is paid."))

    def refund(ctx: JobContext, order: Order) -> Literal["refunded", "nothing_charged"]:
        # Cancelled during the charge, the ledger may not know whether the card was
        # charged (a crash between the charge and its record): ask the gateway by key.
        key = f"payout:{order.order_id}:charge"
        charged = ctx.step("charged", lambda: gateway.find(key))
        if charged is None or not charged.get("ok"):
            return "nothing_charged"
        refund_key = f"payout:{order.order_id}:refund"
        ctx.step("refund", lambda: gateway.refund(refund_key, charged["charge_id"]))
        return "refunded"

    return engine.flow(
        "payout",
        chart,
        {
            "charge": StepHandler(charge, retry=RetryPolicy(max_attempts=3, base=1.0, jitter=0)),
            "await_settlement": await_settlement,
            "notify": notify,
            "refund": StepHandler(refund, retry=RetryPolicy(max_attempts=10, cap=600.0)),
        },
        payload=Order,
        idempotency=lambda order: f"payout:{order.order_id}",
        retry=RetryPolicy(max_attempts=5, base=1.0, cap=60.0),
        timeout=30.0,
    )


@dataclass
class FakeGateway:
    """An in-memory gateway: keyed calls return the first call's answer."""

    settle_after: int | None = 2  # status checks before "settled"; None: never settles
    decline: bool = False
    calls: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: int = 0

    def charge(self, key: str, amount_cents: int) -> dict[str, Any]:
        return self.calls.setdefault(
            key, {"ok": not self.decline, "charge_id": f"ch_{len(self.calls) + 1}"}
        )

    def find(self, key: str) -> dict[str, Any] | None:
        return self.calls.get(key)

    def status(self, charge_id: str) -> str:
        self.checks += 1
        if self.settle_after is None or self.checks <= self.settle_after:
            return "pending"
        return "settled"

    def refund(self, key: str, charge_id: str) -> dict[str, Any]:
        return self.calls.setdefault(key, {"refunded": charge_id})


@dataclass
class FakeMailer:
    sent: dict[str, str] = field(default_factory=dict)

    def send(self, key: str, to: str, text: str) -> None:
        self.sent.setdefault(key, to)


def make(url: str | None = None) -> Engine:
    """The app the CLI loads (``--app docs.examples.payout:make``): fake adapters."""
    engine = Engine(url)
    register(engine, FakeGateway(), FakeMailer())
    return engine


engine = make()  # lazily opened: nothing touches a database until it is used


def main() -> None:
    """Two payouts on a throwaway SQLite file: one settles, one times out and is refunded."""
    import tempfile

    clock = FrozenClock()
    with tempfile.TemporaryDirectory() as tmp:
        demo = Engine(f"sqlite:///{tmp}/payout.db", clock=clock)
        gateway = FakeGateway(settle_after=2)
        register(demo, gateway, FakeMailer())
        paid = demo.enqueue("payout", {"order_id": 1, "amount_cents": 1250, "email": "a@b.c"})
        demo.run_until_idle()
        for _ in range(3):  # three checks, a minute apart: the third says settled
            clock.advance(timedelta(minutes=1))
            demo.run_until_idle()
        gateway.settle_after = None  # the next payment never settles
        late = demo.enqueue("payout", {"order_id": 2, "amount_cents": 990, "email": "d@e.f"})
        demo.run_until_idle()
        clock.advance(timedelta(hours=2))
        demo.run_until_idle()
        for job_id in (paid, late):
            view = demo.get(job_id)
            print(f"job {job_id}: {view.state}")
            for event in view.history:
                print(f"  {event.trigger:>9}: {event.from_state} -> {event.to_state}")
        demo.close()


if __name__ == "__main__":
    main()
