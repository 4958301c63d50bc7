"""The standard lifecycle end to end on a real SQLite file: the public contract."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from engine import (
    Engine,
    FrozenClock,
    IdempotencyRequired,
    Invariant,
    Permanent,
    RetryPolicy,
    TransitionNotAllowed,
    UnknownJobKind,
)
from statecharts import lifecycle, path_errors


class Receipt(BaseModel):
    order_id: int
    email: str


NO_JITTER = RetryPolicy(max_attempts=3, base=1.0, factor=2.0, cap=300.0, jitter=0.0)


def register(engine: Engine, handler, retry: RetryPolicy = NO_JITTER, **kw) -> str:  # type: ignore[no-untyped-def]
    engine.job(
        payload=Receipt,
        idempotency=lambda p: f"receipt:{p.order_id}",
        retry=retry,
        timeout=30.0,
        kind="send_receipt",
        **kw,
    )(handler)
    return "send_receipt"


def assert_valid_path(engine: Engine, job_id: int) -> None:
    errors = path_errors(lifecycle(), engine.get(job_id).path)
    assert errors == [], errors


def test_happy_path_succeeds_once_and_records_history(engine: Engine) -> None:
    """A returning job succeeds on attempt 1; its history is enqueue, start, succeed."""
    calls: list[int] = []
    register(engine, lambda ctx, p: calls.append(p.order_id) or {"sent": p.email})
    job_id = engine.enqueue("send_receipt", {"order_id": 1, "email": "a@b.c"})
    report = engine.run_until_idle()
    view = engine.get(job_id)
    assert (report.claimed, report.succeeded) == (1, 1)
    assert view.state == "succeeded" and view.attempt == 1 and calls == [1]
    assert view.result == {"sent": "a@b.c"}
    assert [(e.trigger, e.from_state, e.to_state) for e in view.history] == [
        ("enqueue", None, "pending"),
        ("start", "pending", "running"),
        ("succeed", "running", "succeeded"),
    ]
    assert view.due_at is None and view.lease_expires_at is None and view.finished_at is not None
    assert_valid_path(engine, job_id)


def test_retryable_failure_waits_for_backoff_then_recovers(
    engine: Engine, clock: FrozenClock
) -> None:
    """A failing attempt goes to retry_wait due after the backoff; the retry then succeeds."""

    def flaky(ctx, p):  # type: ignore[no-untyped-def]
        if ctx.attempt == 1:
            raise ConnectionError("smtp down")

    register(engine, flaky)
    job_id = engine.enqueue("send_receipt", {"order_id": 2, "email": "x@y.z"})
    first = engine.run_until_idle()
    view = engine.get(job_id)
    assert first.retried == 1 and view.state == "retry_wait"
    assert view.due_at == clock.now() + timedelta(seconds=1.0)
    assert view.last_error is not None and view.last_error.error_class == "ConnectionError"
    assert "smtp down" in view.last_error.message and "ConnectionError" in view.last_error.traceback
    assert engine.run_until_idle().claimed == 0, "not due before the backoff has passed"
    clock.advance(1.0)
    assert engine.run_until_idle().succeeded == 1
    assert engine.get(job_id).state == "succeeded" and engine.get(job_id).attempt == 2
    assert_valid_path(engine, job_id)


def test_permanent_failure_quarantines_at_once(engine: Engine) -> None:
    """Raising Permanent quarantines on the first attempt with reason 'permanent'."""

    def refuse(ctx, p):  # type: ignore[no-untyped-def]
        raise Permanent("address does not exist")

    register(engine, refuse)
    job_id = engine.enqueue("send_receipt", {"order_id": 3, "email": "x@y.z"})
    assert engine.run_until_idle().quarantined == 1
    view = engine.get(job_id)
    assert view.state == "quarantined" and view.attempt == 1
    assert view.quarantine_reason == "permanent"
    assert view.last_error is not None and view.last_error.error_class == "Permanent"
    assert_valid_path(engine, job_id)


def test_policy_permanent_exception_types_quarantine_at_once(engine: Engine) -> None:
    """Exception types listed in RetryPolicy.permanent are treated like Permanent."""
    policy = RetryPolicy(max_attempts=5, base=1, jitter=0, permanent=(KeyError,))

    def missing(ctx, p):  # type: ignore[no-untyped-def]
        raise KeyError("customer")

    register(engine, missing, retry=policy)
    job_id = engine.enqueue("send_receipt", {"order_id": 4, "email": "x@y.z"})
    engine.run_until_idle()
    assert engine.get(job_id).quarantine_reason == "permanent"


def test_exhausted_then_requeued_gets_a_fresh_budget(engine: Engine, clock: FrozenClock) -> None:
    """After max_attempts failures the job is quarantined 'exhausted'; requeue runs it again."""
    outcomes = iter([ValueError("1"), ValueError("2"), ValueError("3"), None])

    def handler(ctx, p):  # type: ignore[no-untyped-def]
        error = next(outcomes)
        if error is not None:
            raise error

    register(engine, handler)
    job_id = engine.enqueue("send_receipt", {"order_id": 5, "email": "x@y.z"})
    for _ in range(5):
        engine.run_until_idle()
        clock.advance(10)
    view = engine.get(job_id)
    assert view.state == "quarantined" and view.attempt == 3 == view.max_attempts
    assert view.quarantine_reason == "exhausted" and view.last_error.message == "3"  # type: ignore[union-attr]
    assert [
        e.detail["retry_in"]
        for e in view.history
        if e.trigger == "fail" and e.to_state == "retry_wait"
    ] == [1.0, 2.0]
    engine.requeue(job_id)
    requeued = engine.get(job_id)
    assert (
        requeued.state == "pending" and requeued.attempt == 0 and requeued.quarantine_reason is None
    )
    assert engine.run_until_idle().succeeded == 1
    assert engine.get(job_id).state == "succeeded"
    assert_valid_path(engine, job_id)


def test_requeue_refuses_a_job_that_is_not_final(engine: Engine) -> None:
    """Requeue of a pending job is refused with a message naming the states it applies to."""
    register(engine, lambda ctx, p: None)
    job_id = engine.enqueue("send_receipt", {"order_id": 6, "email": "x@y.z"})
    with pytest.raises(TransitionNotAllowed, match=r"pending.*quarantined"):
        engine.requeue(job_id)


def test_cancel_pending_job_is_never_run(engine: Engine) -> None:
    """A cancelled pending job reaches 'cancelled' and its handler never runs."""
    calls: list[int] = []
    register(engine, lambda ctx, p: calls.append(1))
    job_id = engine.enqueue("send_receipt", {"order_id": 7, "email": "x@y.z"})
    engine.cancel(job_id)
    engine.run_until_idle()
    assert engine.get(job_id).state == "cancelled" and calls == []
    assert_valid_path(engine, job_id)


def test_dedupe_returns_first_id_and_stores_one_row(engine: Engine) -> None:
    """A second enqueue with the same key returns the first id and stores nothing new."""
    register(engine, lambda ctx, p: None)
    first = engine.enqueue("send_receipt", {"order_id": 1, "email": "a@b.c"})
    again = engine.enqueue("send_receipt", Receipt(order_id=1, email="a@b.c"))
    other = engine.enqueue("send_receipt", {"order_id": 2, "email": "a@b.c"})
    assert first == again != other
    assert len(engine.store.job_list()) == 2
    assert len(engine.get(first).history) == 1


def test_dedupe_holds_after_the_first_job_finished(engine: Engine) -> None:
    """The key still dedupes once the first job succeeded: the work is not done twice."""
    calls: list[int] = []
    register(engine, lambda ctx, p: calls.append(1))
    first = engine.enqueue("send_receipt", {"order_id": 1, "email": "a@b.c"})
    engine.run_until_idle()
    assert engine.enqueue("send_receipt", {"order_id": 1, "email": "a@b.c"}) == first
    engine.run_until_idle()
    assert calls == [1]


def test_invariant_jobs_are_not_deduplicated(engine: Engine) -> None:
    """Jobs declared with an Invariant get a new row per enqueue (repeats are harmless)."""
    engine.job(payload=Receipt, idempotency=Invariant("idempotent upsert"), kind="sync")(
        lambda ctx, p: None
    )
    a = engine.enqueue("sync", {"order_id": 1, "email": "a@b.c"})
    b = engine.enqueue("sync", {"order_id": 1, "email": "a@b.c"})
    assert a != b and engine.get(a).idempotency_key is None


def test_invalid_payload_is_rejected_and_nothing_is_stored(engine: Engine) -> None:
    """enqueue raises pydantic's ValidationError for a bad payload and stores no row."""
    register(engine, lambda ctx, p: None)
    with pytest.raises(ValidationError, match="order_id"):
        engine.enqueue("send_receipt", {"order_id": "not a number", "email": "a@b.c"})
    with pytest.raises(ValidationError, match="email"):
        engine.enqueue("send_receipt", {"order_id": 1})
    assert engine.store.job_list() == []


def test_unknown_kind_is_refused_with_its_name(engine: Engine) -> None:
    """Enqueueing an unregistered kind names it and the registered kinds; nothing is stored."""
    register(engine, lambda ctx, p: None)
    with pytest.raises(UnknownJobKind, match=r"'send_reciept'.*send_receipt"):
        engine.enqueue("send_reciept", {"order_id": 1, "email": "a@b.c"})
    assert engine.store.job_list() == []


def test_registration_without_idempotency_is_refused(engine: Engine) -> None:
    """A job without idempotency is refused with a message saying why and what to pass."""
    with pytest.raises(IdempotencyRequired, match="Invariant") as caught:
        engine.job(payload=Receipt)(lambda ctx, p: None)
    assert "best effort" in str(caught.value)
    with pytest.raises(Exception, match="reason"):
        Invariant("  ")


def test_stored_payload_that_no_longer_validates_quarantines_without_retry(
    engine: Engine,
) -> None:
    """A stored payload that fails today's schema quarantines with reason invalid_payload."""
    calls: list[int] = []
    register(engine, lambda ctx, p: calls.append(1))
    job_id = engine.enqueue("send_receipt", {"order_id": 8, "email": "a@b.c"})
    from sqlalchemy import update

    from engine.store.schema import jobs

    with engine.store.write() as conn:  # the schema moved on: the old row lacks a field
        conn.execute(update(jobs).where(jobs.c.id == job_id).values(payload={"order_id": 8}))
    engine.run_until_idle()
    view = engine.get(job_id)
    assert view.state == "quarantined" and view.quarantine_reason == "invalid_payload"
    assert view.attempt == 1 and calls == []
    assert "email" in view.last_error.message  # type: ignore[union-attr]


def test_step_ledger_runs_each_step_once_across_retries(engine: Engine, clock: FrozenClock) -> None:
    """A step recorded on attempt 1 is replayed (not rerun) on attempt 2, with the same value."""
    charged: list[int] = []
    seen: list[object] = []

    def handler(ctx, p):  # type: ignore[no-untyped-def]
        charge = ctx.step(
            "charge", lambda: charged.append(p.order_id) or {"charge_id": len(charged)}
        )
        seen.append(charge)
        if ctx.attempt == 1:
            raise ConnectionError("mail server down after the charge")
        ctx.step("mail", lambda: "sent")

    register(engine, handler)
    job_id = engine.enqueue("send_receipt", {"order_id": 9, "email": "a@b.c"})
    engine.run_until_idle()
    clock.advance(5)
    engine.run_until_idle()
    assert engine.get(job_id).state == "succeeded"
    assert charged == [9], "the charge step ran exactly once"
    assert seen == [{"charge_id": 1}, {"charge_id": 1}]
    assert engine.store.step_get_many([job_id]) == {
        job_id: {"charge": {"charge_id": 1}, "mail": "sent"}
    }


def test_step_result_that_is_not_json_quarantines_clearly(engine: Engine) -> None:
    """A step returning a non-JSON value quarantines (retrying would repeat its effect)."""

    def handler(ctx, p):  # type: ignore[no-untyped-def]
        ctx.step("bad", lambda: object())

    register(engine, handler)
    job_id = engine.enqueue("send_receipt", {"order_id": 10, "email": "a@b.c"})
    engine.run_until_idle()
    view = engine.get(job_id)
    assert view.state == "quarantined" and view.quarantine_reason == "not_json"
    assert view.last_error.error_class == "StepResultError"  # type: ignore[union-attr]
    assert "JSON" in view.last_error.message  # type: ignore[union-attr]
    assert engine.store.step_get_many([job_id]) == {}


def test_context_exposes_identity(engine: Engine) -> None:
    """ctx carries the job id, attempt, max_attempts, correlation id and a lease token."""
    seen = {}

    def handler(ctx, p):  # type: ignore[no-untyped-def]
        seen.update(
            id=ctx.job_id,
            attempt=ctx.attempt,
            max=ctx.max_attempts,
            cid=ctx.correlation_id,
            lease=ctx.lease_token,
        )

    register(engine, handler)
    job_id = engine.enqueue(
        "send_receipt", {"order_id": 11, "email": "a@b.c"}, correlation_id="req-42"
    )
    engine.run_until_idle()
    assert seen["id"] == job_id and seen["attempt"] == 1 and seen["max"] == 3
    assert seen["cid"] == "req-42" and isinstance(seen["lease"], str) and seen["lease"]


def test_delay_and_priority_order_claims(engine: Engine, clock: FrozenClock) -> None:
    """Delayed jobs wait for their time; among due jobs higher priority runs first."""
    order: list[int] = []
    register(engine, lambda ctx, p: order.append(p.order_id))
    engine.enqueue("send_receipt", {"order_id": 1, "email": "a"}, delay=60)
    engine.enqueue("send_receipt", {"order_id": 2, "email": "a"}, priority=0)
    engine.enqueue("send_receipt", {"order_id": 3, "email": "a"}, priority=5)
    engine.run_until_idle()
    assert order == [3, 2]
    clock.advance(60)
    engine.run_until_idle()
    assert order == [3, 2, 1]


def test_jobs_of_unknown_kinds_are_left_alone(db_url: str, clock: FrozenClock) -> None:
    """A worker never claims a job kind it has no handler for."""
    producer = Engine(db_url, clock=clock)
    register(producer, lambda ctx, p: None)
    job_id = producer.enqueue("send_receipt", {"order_id": 1, "email": "a"})
    other = Engine(db_url, clock=clock)
    other.job(payload=Receipt, idempotency=Invariant("test"), kind="other")(lambda ctx, p: None)
    assert other.run_until_idle().claimed == 0
    assert other.get(job_id).state == "pending"


def test_committed_enqueue_survives_a_new_process(db_url: str, clock: FrozenClock) -> None:
    """A returned enqueue is durable: a fresh engine on the same file sees and runs it."""
    first = Engine(db_url, clock=clock)
    register(first, lambda ctx, p: None)
    job_id = first.enqueue("send_receipt", {"order_id": 1, "email": "a"})
    first.close()
    second = Engine(db_url, clock=clock)
    register(second, lambda ctx, p: None)
    assert second.run_until_idle().succeeded == 1
    assert second.get(job_id).state == "succeeded"


def test_steps_are_replayed_after_a_requeue(engine: Engine, clock: FrozenClock) -> None:
    """A requeued job's first new attempt replays steps recorded before the quarantine."""
    charged: list[int] = []

    def handler(ctx, p):  # type: ignore[no-untyped-def]
        ctx.step("charge", lambda: charged.append(1) or len(charged))
        raise Permanent("mail address rejected")

    register(engine, handler)
    job_id = engine.enqueue("send_receipt", {"order_id": 12, "email": "a@b.c"})
    engine.run_until_idle()
    engine.requeue(job_id)
    engine.run_until_idle()
    assert engine.get(job_id).attempt == 1, "the requeued run started at attempt 1"
    assert charged == [1], "the charge step ran once across the requeue"
