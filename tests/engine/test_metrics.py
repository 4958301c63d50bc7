"""Prometheus metrics on both backends: values after a scripted run read back through
prometheus_client's registry, and over HTTP from a worker (one process, and a supervisor's
one view of two)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from engine import Engine, FrozenClock, Invariant, Permanent, RetryPolicy, Worker
from engine.metrics import GaugePublisher, Metrics

ROOT = Path(__file__).resolve().parents[2]


class Item(BaseModel):
    n: int


def scripted(url: str, clock: FrozenClock | None = None) -> Engine:
    engine = Engine(url, clock=clock, lease_seconds=10)
    quick = RetryPolicy(max_attempts=2, base=0, jitter=0)

    @engine.job(payload=Item, idempotency=Invariant("t"), kind="ok", retry=quick)
    def ok(ctx: Any, p: Item) -> None:
        return None

    @engine.job(payload=Item, idempotency=Invariant("t"), kind="flaky", retry=quick)
    def flaky(ctx: Any, p: Item) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("once")

    @engine.job(payload=Item, idempotency=Invariant("t"), kind="refused", retry=quick)
    def refused(ctx: Any, p: Item) -> None:
        raise Permanent("no")

    return engine


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else float(found)


def test_a_scripted_run_counts_what_happened(db_url: str) -> None:
    engine = scripted(db_url)
    for n in range(3):
        engine.enqueue("ok", {"n": n})
    engine.enqueue("flaky", {"n": 1})
    engine.enqueue("refused", {"n": 1})
    metrics = Metrics(engine.registry)
    Worker(engine, concurrency=2, poll_interval=0.05, metrics=metrics).run(until_idle=True)
    attempts = "jobcharts_attempts_total"
    assert value(metrics, attempts, kind="ok", outcome="succeed") == 3
    assert value(metrics, attempts, kind="flaky", outcome="fail") == 1
    assert value(metrics, attempts, kind="flaky", outcome="succeed") == 1
    assert value(metrics, attempts, kind="refused", outcome="fail_permanent") == 1
    moved = "jobcharts_transitions_total"
    common = {"chart": "lifecycle", "from_state": "running"}
    assert value(metrics, moved, kind="ok", to_state="succeeded", trigger="succeed", **common) == 3
    assert value(metrics, moved, kind="flaky", to_state="retry_wait", trigger="fail", **common) == 1
    quarantined = {"to_state": "quarantined", "trigger": "fail_permanent"}
    assert value(metrics, moved, kind="refused", **quarantined, **common) == 1
    assert value(metrics, "jobcharts_attempt_duration_seconds_count", kind="ok") == 3
    assert value(metrics, "jobcharts_lag_seconds_count", kind="ok") == 3  # one per start
    assert value(metrics, "jobcharts_lag_seconds_count", kind="flaky") == 2
    # The database's gauges, published by this worker (the only one) as it started.
    assert value(metrics, "jobcharts_jobs", kind="ok", state="pending") == 3
    assert value(metrics, "jobcharts_jobs", kind="refused", state="pending") == 1
    engine.close()


def test_rescues_and_fenced_results_are_counted(db_url: str) -> None:
    clock = FrozenClock()
    engine = scripted(db_url, clock)
    metrics = Metrics(engine.registry)
    engine.telemetry.attach(metrics)
    never, maybe = engine.enqueue("ok", {"n": 1}), engine.enqueue("ok", {"n": 2})
    batch = engine.claim(clock.now(), 2)
    engine.mark_started(batch, [c for c in batch.jobs if c.job_id == maybe], clock.now())
    clock.advance(11)
    engine.rescue(clock.now())
    assert value(metrics, "jobcharts_rescues_total", kind="ok", started="no") == 1
    assert value(metrics, "jobcharts_rescues_total", kind="ok", started="maybe") == 1
    moved = "jobcharts_transitions_total"
    labels = {"chart": "lifecycle", "kind": "ok", "from_state": "running"}
    assert value(metrics, moved, to_state="pending", trigger="release", **labels) == 1
    assert value(metrics, moved, to_state="retry_wait", trigger="expire", **labels) == 1
    assert {never, maybe} == {c.job_id for c in batch.jobs}
    engine.close()


def test_gauges_are_published_by_one_worker_at_a_time(db_url: str, backend: str) -> None:
    clock = FrozenClock()
    engine = scripted(db_url, clock)
    engine.enqueue("ok", {"n": 1})
    clock.advance(30)
    first, second = Metrics(engine.registry), Metrics(engine.registry)
    one, other = GaugePublisher(engine.store, first), GaugePublisher(engine.store, second)
    assert one.refresh(clock.now()) is True
    assert value(first, "jobcharts_jobs", kind="ok", state="pending") == 1
    assert value(first, "jobcharts_oldest_due_age_seconds", kind="ok") == 30
    published = other.refresh(clock.now())
    if backend == "postgresql":  # the lock is taken: the second shows nothing
        assert published is False
        assert value(second, "jobcharts_jobs", kind="ok", state="pending") == 0
        one.close()  # the first one's process ends: the second takes over
        assert other.refresh(clock.now()) is True
    assert value(second, "jobcharts_jobs", kind="ok", state="pending") == 1
    other.close()
    engine.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.mark.parametrize("processes", [None, 2])
def test_metrics_over_http(db_url: str, processes: int | None) -> None:
    """`worker --metrics-port` serves the counts on localhost; with --processes the
    supervisor serves the sum over its workers."""
    from tests.engine import cli_app

    engine = Engine(db_url)
    engine.job(payload=cli_app.Order, idempotency=lambda p: f"ship:{p.order_id}", kind="ship")(
        lambda ctx, p: None
    )
    for n in range(1, 21):
        engine.enqueue("ship", {"order_id": n})
    port = free_port()
    command = [sys.executable, "-m", "engine.cli", "--log-level", "warning", "worker"]
    command += ["--app", "tests.engine.cli_app:engine", "--db", db_url, "--poll", "0.05"]
    command += ["--metrics-port", str(port)]
    if processes:
        command += ["--processes", str(processes)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    key = "jobcharts_attempts_total[('kind', 'ship'), ('outcome', 'succeed')]"
    try:
        deadline = time.monotonic() + 60
        seen: dict[str, float] = {}
        while time.monotonic() < deadline:
            try:
                seen = scrape(port)
            except OSError:
                seen = {}
            if seen.get(key) == 20:
                break
            time.sleep(0.2)
        assert seen.get(key) == 20, {k: v for k, v in seen.items() if "attempts" in k}
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        engine.close()
