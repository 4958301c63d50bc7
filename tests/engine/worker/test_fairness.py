"""Dispatch fairness: a worker claims only for its free handler threads, so no job waits
behind a slow one while another thread or worker process could run it; a claimed job is
started by the claim itself, so ``inspect`` never calls a waiting job "running".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from engine import Engine, JobContext
from engine.worker import Worker
from tests.engine.cli_app import Slow, slow

ROOT = Path(__file__).resolve().parents[3]
WAIT = 30.0  # generous: only reached when the rule is broken


class Item(BaseModel):
    name: str


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_quick_jobs_run_on_the_free_thread_while_a_slow_one_runs(db_url: str) -> None:
    """One slow job and five quick ones on two threads: all five quick ones succeed while
    the slow one still runs (none was claimed into a queue behind it), and the slow one's
    history shows it was started by its claim."""
    engine = Engine(db_url)
    release = threading.Event()
    slow_began = threading.Event()

    @engine.job(payload=Item, idempotency=lambda p: f"item:{p.name}", timeout=120.0)
    def item(ctx: JobContext, p: Item) -> str:
        if p.name == "slow":
            slow_began.set()
            assert release.wait(WAIT)
        return p.name

    try:
        slow = engine.enqueue("item", {"name": "slow"})
        quick = [engine.enqueue("item", {"name": f"quick-{n}"}) for n in range(5)]
        worker = Worker(engine, concurrency=2, poll_interval=0.05)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            assert slow_began.wait(WAIT)
            wait_until(
                lambda: all(engine.get(j).state == "succeeded" for j in quick),
                "the quick jobs to succeed on the free thread",
            )
            view = engine.get(slow)
            assert view.state == "running" and view.started_at is not None
        finally:
            release.set()
            worker.stop()
            thread.join(WAIT)
        assert not thread.is_alive()
        assert engine.get(slow).state == "succeeded"
        assert [e.trigger for e in engine.get(slow).history] == ["enqueue", "start", "succeed"]
    finally:
        engine.close()


def test_a_worker_leaves_jobs_it_cannot_start_to_other_processes(db_url: str) -> None:
    """Two one-thread workers on one database and two blocking jobs: each worker gets one.

    The first worker starts its job and, with no thread free, claims nothing more, so the
    second job is still pending for the second worker (and then runs there at once).
    """
    engines = [Engine(db_url), Engine(db_url)]
    began: dict[str, int] = {}
    release = threading.Event()

    for index, engine in enumerate(engines):

        def item(ctx: JobContext, p: Item, index: int = index) -> str:
            began[p.name] = index
            assert release.wait(WAIT)
            return p.name

        engine.job(payload=Item, idempotency=lambda p: f"item:{p.name}", kind="item")(item)

    try:
        first = engines[0].enqueue("item", {"name": "a"})
        second = engines[0].enqueue("item", {"name": "b"})
        workers = [Worker(e, concurrency=1, poll_interval=0.05) for e in engines]
        threads = [threading.Thread(target=w.run, daemon=True) for w in workers]
        threads[0].start()
        wait_until(lambda: "a" in began, "the first worker to start a job")
        time.sleep(0.3)  # room for a (wrong) claim-ahead of the second job
        assert engines[0].get(second).state == "pending", "claimed by a worker with no free thread"
        threads[1].start()
        wait_until(lambda: "b" in began, "the second worker to start the other job")
        assert began == {"a": 0, "b": 1}
        assert engines[0].get(first).state == engines[0].get(second).state == "running"
    finally:
        release.set()
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join(WAIT)
        for engine in engines:
            engine.close()


def test_both_worker_processes_get_work(db_url: str, tmp_path: Path) -> None:
    """``worker --processes 2 -c 1`` with two 3 s jobs runs them side by side: both handlers
    have begun before either finishes (one process never takes both)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHARTS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    app = Engine(db_url)  # the app's kind, registered here to enqueue it
    app.job(payload=Slow, idempotency=lambda p: f"slow:{p.marker}", kind="slow")(slow)
    markers = [tmp_path / "one", tmp_path / "two"]
    try:
        ids = [app.enqueue("slow", {"marker": str(m), "seconds": 3.0}) for m in markers]
        command = [sys.executable, "-m", "engine.cli", "--log-level", "warning", "worker"]
        command += ["--app", "tests.engine.cli_app:engine", "--db", db_url]
        command += ["--processes", "2", "--concurrency", "1", "--poll", "0.05"]
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            wait_until(
                lambda: all(Path(f"{m}.started").exists() for m in markers),
                "both handlers to begin",
            )
            assert not any(m.exists() for m in markers), "one finished before the other began"
            wait_until(lambda: all(m.exists() for m in markers), "both handlers to finish")
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(WAIT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        starts = [e for job_id in ids for e in app.get(job_id).history if e.trigger == "start"]
        assert len(starts) == 2 and len({e.worker for e in starts}) == 2, starts
    finally:
        app.close()
