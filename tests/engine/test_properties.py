"""Properties over many generated runs of the real engine on a real SQLite file."""

from __future__ import annotations

import contextlib
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from engine import Engine, FrozenClock, Permanent, RetryPolicy, TransitionNotAllowed
from statecharts import lifecycle, path_errors

OUTCOMES = st.sampled_from(["ok", "fail", "permanent"])


class Item(BaseModel):
    n: int


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    scripts=st.lists(st.lists(OUTCOMES, min_size=1, max_size=8), min_size=1, max_size=6),
    max_attempts=st.integers(min_value=1, max_value=4),
    operations=st.lists(
        st.tuples(st.sampled_from(["tick", "advance", "requeue", "cancel"]), st.integers(0, 5)),
        max_size=25,
    ),
)
def test_any_run_keeps_histories_valid_and_attempts_bounded(
    scripts: list[list[str]], max_attempts: int, operations: list[tuple[str, int]]
) -> None:
    """Whatever handlers and operators do, histories are paths and attempts stay bounded."""
    with tempfile.TemporaryDirectory() as tmp:
        clock = FrozenClock()
        engine = Engine(f"sqlite:///{Path(tmp) / 'p.db'}", clock=clock, seed=0)
        calls: Counter[int] = Counter()

        def handler(ctx, p: Item) -> None:  # type: ignore[no-untyped-def]
            script = scripts[p.n]
            outcome = script[min(calls[p.n], len(script) - 1)]
            calls[p.n] += 1
            if outcome == "fail":
                raise RuntimeError("scripted failure")
            if outcome == "permanent":
                raise Permanent("scripted permanent failure")

        policy = RetryPolicy(max_attempts=max_attempts, base=1, factor=2, cap=8, jitter=0.5)
        engine.job(payload=Item, idempotency=lambda p: f"item:{p.n}", retry=policy, kind="item")(
            handler
        )
        ids = [engine.enqueue("item", {"n": n}) for n in range(len(scripts))]
        for op, arg in [*operations, ("drain", 0)]:
            if op == "tick":
                engine.tick()
            elif op == "advance":
                clock.advance(arg * 3)
            elif op in ("requeue", "cancel"):
                with contextlib.suppress(TransitionNotAllowed):
                    getattr(engine, op)(ids[arg % len(ids)])
            else:
                for _ in range(max_attempts + 2):
                    engine.run_until_idle()
                    clock.advance(10)
        chart = lifecycle()
        for job_id, n in zip(ids, range(len(scripts)), strict=True):
            view = engine.get(job_id)
            assert path_errors(chart, view.path) == []
            assert 0 <= view.attempt <= view.max_attempts == max_attempts
            starts = sum(1 for e in view.history if e.trigger == "start")
            assert starts == calls[n], "every start ran the handler exactly once"
            assert view.state in {"succeeded", "quarantined", "cancelled"}, view.state
            successes = sum(1 for e in view.history if e.trigger == "succeed")
            assert successes <= 1 + sum(1 for e in view.history if e.trigger == "requeue")
            if view.state == "quarantined":
                assert view.quarantine_reason in {"permanent", "exhausted"}
        engine.close()
