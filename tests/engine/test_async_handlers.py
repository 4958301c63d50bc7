"""Async handlers (``async def``) on both backends: they succeed, fail, retry, time out
(their task cancelled), crash (rescued), record async steps once, see a cancel, run flows
with polling checks, and share one worker with sync handlers."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from engine import Engine, FrozenClock, Invariant, RegistrationError, Worker
from tests.engine import async_app


@pytest.fixture
def app(db_url: str) -> Iterator[Engine]:
    async_app.engine.close()
    async_app.engine.bind(db_url)
    async_app.CALLS.clear()
    async_app.STATE.clear()
    yield async_app.engine
    async_app.engine.close()


def run(engine: Engine, **options: Any) -> Any:
    worker = Worker(
        engine, concurrency=options.pop("concurrency", 4), poll_interval=0.05, **options
    )
    return worker.run(until_idle=True)


def test_async_handlers_succeed_retry_and_quarantine(app: Engine) -> None:
    ok = app.enqueue("fetch", {"n": 1})
    flaky = app.enqueue("fetch", {"n": 2, "fail_first": True})
    refused = app.enqueue("fetch", {"n": 3, "permanent": True})
    run(app)
    assert app.get(ok).result == {"n": 1, "attempt": 1}
    view = app.get(flaky)
    assert (view.state, view.attempt, view.result) == ("succeeded", 2, {"n": 2, "attempt": 2})
    assert view.history[2].detail["error"] == "ConnectionError"
    view = app.get(refused)
    assert (view.state, view.quarantine_reason) == ("quarantined", "permanent")


def test_an_async_handler_past_its_timeout_is_cancelled_and_retried(app: Engine) -> None:
    job = app.enqueue("sleepy", {"n": 1})
    started = time.monotonic()
    run(app)
    assert time.monotonic() - started < 20, "the 30 s await was cancelled, not waited for"
    view = app.get(job)
    assert (view.state, view.attempt, view.result) == ("succeeded", 2, "on time")
    assert view.history[2].detail["error"] == "HandlerTimeout"
    assert async_app.STATE.get("sleepy:1:cancelled") is True
    assert "sleepy:1:late" not in async_app.STATE


def test_an_async_step_runs_once_across_retries(app: Engine) -> None:
    job = app.enqueue("ledger", {"n": 7})
    run(app)
    view = app.get(job)
    assert (view.state, view.attempt, view.result) == ("succeeded", 2, {"charge": "ch_7"})
    assert async_app.CALLS["charge:7"] == 1


def test_an_async_handler_sees_a_cancel_request(app: Engine) -> None:
    job = app.enqueue("watch", {"n": 1})
    worker = Worker(app, concurrency=1, poll_interval=0.05)
    thread = threading.Thread(target=lambda: worker.run(until_idle=True))
    thread.start()
    deadline = time.monotonic() + 20
    while "watch:1:started" not in async_app.STATE and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.cancel(job) == "requested"
    thread.join(30)
    assert not thread.is_alive()
    assert async_app.STATE.get("watch:1:saw_cancel") is True
    assert app.get(job).state == "cancelled"


def test_a_flow_with_an_async_polling_check(app: Engine, db_url: str) -> None:
    clock = FrozenClock()
    engine = Engine(db_url, clock=clock)
    spec = async_app.engine.registry.get("settle")
    engine.flow(
        "settle",
        spec.chart,
        {s: st.handler for s, st in spec.steps.items()},
        payload=async_app.Job,
        idempotency=lambda p: f"settle:{p.n}",
    )
    job = engine.enqueue("settle", {"n": 1})
    for _ in range(5):
        engine.run_until_idle()
        clock.advance(1)
    view = engine.get(job)
    assert view.state == "succeeded", [(e.trigger, e.to_state) for e in view.history]
    triggers = [e.trigger for e in view.history]
    assert triggers.count("wait") == 2 and "settled" in triggers
    engine.close()


def test_sync_and_async_handlers_share_one_worker(app: Engine) -> None:
    jobs = [app.enqueue("fetch", {"n": n}) for n in range(10)]
    jobs += [app.enqueue("sync_one", {"n": n}) for n in range(10)]
    report = run(app, concurrency=3)
    assert report.succeeded == 20
    assert {app.get(j).state for j in jobs} == {"succeeded"}


def test_async_handlers_await_side_by_side(db_url: str) -> None:
    """Four handlers await at once on the one loop (each waits for the others): the
    worker's handler threads hand them over and the loop interleaves them."""
    engine = Engine(db_url)
    running: list[int] = []
    gate: dict[str, asyncio.Event] = {}

    @engine.job(idempotency=Invariant("test"), kind="meet", timeout=20)
    async def meet(ctx: Any, _p: Any) -> int:
        event = gate.setdefault("all", asyncio.Event())
        running.append(ctx.job_id)
        if len(running) == 4:
            event.set()
        await asyncio.wait_for(event.wait(), 15)  # times out unless all four run at once
        return len(running)

    jobs = [engine.enqueue("meet") for _ in range(4)]
    Worker(engine, concurrency=4, poll_interval=0.05).run(until_idle=True)
    assert [engine.get(j).state for j in jobs] == ["succeeded"] * 4
    engine.close()


def test_a_crashing_async_handler_is_rescued_in_process_isolation(app: Engine) -> None:
    job = app.enqueue("crash", {"n": 1})
    run(
        app,
        concurrency=1,
        isolation="process",
        app_spec="tests.engine.async_app:engine",
        log_args=["--log-level", "error"],
    )
    view = app.get(job)
    assert (view.state, view.attempt) == ("succeeded", 2)
    assert view.history[2].detail["error"] == "HandlerProcessDied"
    assert view.result != os.getpid()


def test_generators_are_refused_at_registration() -> None:
    engine = Engine("sqlite://")

    def gen(ctx: Any, p: Any) -> Any:
        yield 1

    async def agen(ctx: Any, p: Any) -> Any:
        yield 1

    for fn in (gen, agen):
        with pytest.raises(RegistrationError, match="generator function"):
            engine.job(idempotency=Invariant("t"), kind=fn.__name__)(fn)
    with pytest.raises(RegistrationError, match="must be callable"):
        engine.job(idempotency=Invariant("t"), kind="x")(42)  # type: ignore[arg-type]


def test_leases_renew_while_an_async_handler_awaits(db_url: str) -> None:
    """A handler awaiting three times its lease keeps the job while another process keeps
    rescuing expired leases: the worker renews the lease meanwhile, so the job succeeds on
    its one attempt."""
    engine = Engine(db_url, lease_seconds=1.0)
    rescuer = Engine(db_url, lease_seconds=1.0)
    for eng in (engine, rescuer):

        @eng.job(idempotency=Invariant("test"), kind="slow_io", timeout=20)
        async def slow_io(ctx: Any, _p: Any) -> str:
            await asyncio.sleep(3.0)
            return "done"

    job = engine.enqueue("slow_io")
    stop = threading.Event()

    def rescue_loop() -> None:  # another worker's rescue, every 0.2 s
        while not stop.is_set():
            rescuer.rescue(rescuer.now())
            stop.wait(0.2)

    thread = threading.Thread(target=rescue_loop)
    thread.start()
    try:
        Worker(engine, concurrency=1, poll_interval=0.05).run(until_idle=True)
    finally:
        stop.set()
        thread.join()
    view = engine.get(job)
    assert (view.state, view.attempt, view.result) == ("succeeded", 1, "done")
    assert [e.trigger for e in view.history] == ["enqueue", "start", "succeed"]
    engine.close()
    rescuer.close()


def test_an_async_poller_fires_and_runs(db_url: str) -> None:
    """Schedules work the same for async handlers: a poller's slot becomes a job, awaited."""
    clock = FrozenClock()
    engine = Engine(db_url, clock=clock)
    seen: list[str] = []

    @engine.poller(60, idempotency=Invariant("test"), kind="tick")
    async def tick(ctx: Any, _p: Any) -> None:
        await asyncio.sleep(0)
        seen.append(ctx.kind)

    engine.run_until_idle()  # first sight: the schedule starts from the current slot
    for _ in range(2):
        clock.advance(60)
        engine.run_until_idle()
    assert seen == ["tick", "tick"]
    engine.close()
