"""Charts used by the statecharts tests: the lifecycle and a multi-step payout chart."""

from __future__ import annotations

from statecharts import ATTEMPTS_LEFT, Chart, Effect, Facts, Guard, State, StateKind, Transition

DEADLINE_PASSED = Guard(
    "now >= deadline",
    lambda f: f.deadline is not None and f.now is not None and f.now >= f.deadline,
    bounds="deadline",
)


def _settled(facts: Facts) -> bool:
    return facts.error_class is None


def payout() -> Chart:
    """charge -> await settlement (polling, bounded by a deadline) -> notify -> succeeded."""
    return Chart(
        name="payout",
        description="Pay a seller: charge, wait for settlement, notify; refund on timeout.",
        states=(
            State("requested", StateKind.INITIAL),
            State("charge", StateKind.WORK),
            State("awaiting_settlement", StateKind.WAIT),
            State("notify", StateKind.WORK),
            State("refund", StateKind.WORK),
            State("paid", StateKind.FINAL, success=True),
            State("refunded", StateKind.FINAL, success=False),
            State("quarantined", StateKind.FINAL, success=False),
        ),
        transitions=(
            Transition("start", ("requested",), "charge", (), (Effect.START_ATTEMPT,)),
            Transition("charged", ("charge",), "awaiting_settlement", (), (Effect.FINISH,)),
            Transition(
                "settled", ("awaiting_settlement",), "notify", (Guard("settled", _settled),)
            ),
            Transition(
                "poll", ("awaiting_settlement",), "awaiting_settlement", (~DEADLINE_PASSED,)
            ),
            Transition("timed_out", ("awaiting_settlement",), "refund", (DEADLINE_PASSED,)),
            Transition("notified", ("notify",), "paid"),
            Transition("refunded", ("refund",), "refunded"),
            Transition("fail", ("charge", "notify", "refund"), "quarantined", (~ATTEMPTS_LEFT,)),
            Transition("requeue", ("quarantined",), "requested", operator=True),
        ),
    )
