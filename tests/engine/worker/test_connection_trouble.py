"""Connection trouble on PostgreSQL: an exhausted pool, and the server restarting mid-run."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from pydantic import BaseModel
from structlog.testing import capture_logs

from engine import Engine, JobContext
from engine.worker import Worker


class Item(BaseModel):
    n: int


@pytest.fixture
def pg_url(db_url: str, backend: str) -> str:
    if backend != "postgresql":
        pytest.skip("connection pools and server restarts are PostgreSQL matters")
    return db_url


def test_an_exhausted_pool_does_not_deadlock_the_worker(pg_url: str) -> None:
    """One pooled connection for a coordinator and four handler slots writing steps."""
    engine = Engine(pg_url, pool_size=1, max_overflow=0)
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    @engine.job(payload=Item, idempotency=lambda p: f"i:{p.n}")
    def item(ctx: JobContext, p: Item) -> int:
        with lock:
            calls[p.n] += 1
        ctx.step("one", lambda: p.n)
        return int(ctx.step("two", lambda: p.n * 2))

    engine.enqueue_many("item", [{"n": n} for n in range(60)])
    worker = Worker(engine, concurrency=4, poll_interval=0.05)
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(worker.run(until_idle=True)), daemon=True)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the worker deadlocked on its pool"
    assert engine.store.job_count_by_state() == {"succeeded": 60}
    assert set(calls.values()) == {1}
    engine.close()


def _cluster() -> tuple[str, str] | None:
    """(version, name) of the local PostgreSQL cluster when this machine can restart it."""
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        return None
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir())
    return (versions[-1], "main") if versions else None


def test_workers_reconnect_after_the_server_restarts(pg_url: str) -> None:
    """The server restarts mid-run: workers log, back off, reconnect; nothing is lost."""
    cluster = _cluster()
    if cluster is None:
        pytest.skip("cannot restart the PostgreSQL server from here (no pg_ctlcluster)")
    engine = Engine(pg_url, lease_seconds=20)
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    @engine.job(payload=Item, idempotency=lambda p: f"r:{p.n}")
    def slow(ctx: JobContext, p: Item) -> int:
        time.sleep(0.02)
        with lock:
            calls[p.n] += 1
        return int(ctx.step("double", lambda: p.n * 2))

    engine.enqueue_many("slow", [{"n": n} for n in range(300)])
    worker = Worker(engine, concurrency=3, poll_interval=0.1)
    thread = threading.Thread(target=lambda: worker.run(until_idle=True), daemon=True)
    with capture_logs() as logs:
        thread.start()
        time.sleep(1.0)
        subprocess.run(
            ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "restart", "-m", "fast"],
            check=True,
            capture_output=True,
        )
        thread.join(timeout=120)
    assert not thread.is_alive()
    # Noticed by the LISTEN connection at least (the pool's connections may all have been
    # replaced by then: a disconnect invalidates the whole pool, a rested one is pinged).
    noticed = {"worker.db_error", "listener.disconnected"}
    assert any(e["event"] in noticed for e in logs), "the restart was noticed"
    states = engine.store.job_count_by_state()
    assert states == {"succeeded": 300}, states
    # A handler cut off by the restart may run again (at least once), never lost.
    assert set(calls) == set(range(300))
    engine.close()
