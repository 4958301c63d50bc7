"""LISTEN/NOTIFY: on PostgreSQL an enqueue wakes an idle worker at once."""

from __future__ import annotations

import threading
import time

import pytest
from pydantic import BaseModel

from engine import Engine, Invariant
from engine.worker import Worker


class Item(BaseModel):
    n: int


def test_enqueue_wakes_an_idle_worker_without_waiting_for_the_poll(
    db_url: str, backend: str
) -> None:
    """With a 30 s poll, a job enqueued elsewhere is done within a second or two."""
    if backend != "postgresql":
        pytest.skip("wake-ups are LISTEN/NOTIFY on PostgreSQL; SQLite polls")
    done = threading.Event()
    engine = Engine(db_url, lease_seconds=60)
    engine.job(payload=Item, idempotency=Invariant("test"), kind="item")(lambda ctx, p: done.set())
    worker = Worker(engine, poll_interval=30)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        time.sleep(1.0)  # the worker is idle: its next timed wake-up is seconds away
        producer = Engine(db_url)
        producer.job(payload=Item, idempotency=Invariant("test"), kind="item")(lambda ctx, p: 0)
        enqueued = time.monotonic()
        producer.enqueue("item", {"n": 1})
        assert done.wait(10)
        latency = time.monotonic() - enqueued
        assert latency < 2.0, f"woken by polling, not by NOTIFY ({latency:.2f}s)"
        producer.close()
    finally:
        worker.stop()
        thread.join(timeout=10)
        engine.close()
