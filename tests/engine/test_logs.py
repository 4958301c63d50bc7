"""Structured logs: one event when an attempt starts and one when it ends."""

from __future__ import annotations

from pydantic import BaseModel
from structlog.testing import capture_logs

from engine import Engine, FrozenClock, RetryPolicy, events


class P(BaseModel):
    n: int


def test_attempt_start_and_end_events_carry_the_fields(engine: Engine, clock: FrozenClock) -> None:
    """Start and finish events name job, kind, attempt, correlation id; a retry says when."""

    def handler(ctx, p):  # type: ignore[no-untyped-def]
        if p.n == 1:
            raise RuntimeError("boom")

    engine.job(
        payload=P,
        idempotency=lambda p: str(p.n),
        retry=RetryPolicy(max_attempts=2, base=2.0, jitter=0),
        kind="k",
    )(handler)
    events.set_log_threshold(events.LEVELS["debug"])  # attempt.started is a debug event
    ok = engine.enqueue("k", {"n": 0}, correlation_id="cid-ok")
    bad = engine.enqueue("k", {"n": 1}, correlation_id="cid-bad")
    with capture_logs() as logs:
        engine.run_until_idle()
    started = [e for e in logs if e["event"] == "attempt.started"]
    finished = {e["job_id"]: e for e in logs if e["event"] == "attempt.finished"}
    assert {e["job_id"] for e in started} == {ok, bad}
    assert all(e["attempt"] == 1 and e["kind"] == "k" for e in started)
    assert finished[ok]["outcome"] == "succeed" and finished[ok]["state"] == "succeeded"
    assert finished[ok]["correlation_id"] == "cid-ok" and "next_due_at" not in finished[ok]
    assert finished[bad]["outcome"] == "fail" and finished[bad]["state"] == "retry_wait"
    assert finished[bad]["error"] == "RuntimeError" and finished[bad]["correlation_id"] == "cid-bad"
    expected_due = clock.now().replace(second=clock.now().second + 2)
    assert finished[bad]["next_due_at"] == expected_due.isoformat()
    assert all(isinstance(e["duration_ms"], float) for e in finished.values())


def test_at_the_default_level_an_attempt_logs_one_line(engine: Engine) -> None:
    """attempt.started is debug: a drain pays for one line per attempt, not two."""
    engine.job(payload=P, idempotency=lambda p: str(p.n), kind="k")(lambda ctx, p: None)
    engine.enqueue("k", {"n": 0})
    with capture_logs() as logs:
        engine.run_until_idle()
    names = [e["event"] for e in logs if e["event"].startswith("attempt.")]
    assert names == ["attempt.finished"]
