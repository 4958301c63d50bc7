"""The supervisor's watchdog: a worker process frozen by a handler that holds the GIL (no
timeout fires, no lease is renewed, SIGTERM is never handled) is killed and restarted, and
its job is rescued once its lease expires.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from engine import Engine
from tests.engine.worker import watchdog_app

ROOT = Path(__file__).resolve().parents[3]
APP = "tests.engine.worker.watchdog_app:engine"
WAIT = 40.0  # the run takes about 6 s; only a worker that stays frozen gets here


def log_events(path: Path) -> list[dict[str, Any]]:
    """The JSON log lines of ``path`` (click's plain messages skipped)."""
    events = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def ours(pid: int) -> bool:
    """Whether ``pid`` is still one of this test's worker processes (not a reused pid)."""
    try:
        return b"engine.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # gone (or no /proc: nothing this test can check or clean up)
        return False


def test_a_worker_frozen_by_a_gil_holding_handler_is_killed_and_its_job_rescued(
    db_url: str, tmp_path: Path
) -> None:
    """``worker --processes 1 --watchdog 2``: attempt 1 holds the GIL for hours; the watchdog
    kills its worker, the restarted worker expires the lease and runs attempt 2, which
    succeeds. The job completes exactly once, and no process is left behind."""
    # Checks the supervisor's watchdog and the worker loop's heartbeat file: with
    # --watchdog 0 the frozen worker is never killed and the run does not end within WAIT.
    runs = tmp_path / "runs.txt"
    runs.touch()
    app = watchdog_app.make(db_url)
    try:
        job = app.enqueue("gil_hang", {"tag": "one", "runs": str(runs)})
    finally:
        app.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHARTS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "engine.cli", "--log-format", "json", "worker"]
    command += ["--app", APP, "--db", db_url, "--processes", "1", "--watchdog", "2"]
    command += ["--lease", "3", "--concurrency", "1", "--poll", "0.1", "--until-idle"]
    err = tmp_path / "worker.err"
    pids: set[int] = set()
    with err.open("wb") as stderr:
        proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        try:
            code = proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"the supervisor did not finish within {WAIT}s: the frozen worker was not "
                f"killed\n{runs.read_text()}{err.read_text()[-3000:]}"
            ) from None
        assert code == 0, err.read_text()[-3000:]
        events = log_events(err)
        names = [e["event"] for e in events]
        hung = [e for e in events if e["event"] == "supervisor.worker_hung"]
        assert len(hung) == 1, names
        assert names.count("supervisor.restarted") == 1, names

        lines = [line.split() for line in runs.read_text().splitlines()]
        pids = {int(pid) for _, _, pid in lines}
        assert [(what, attempt) for what, attempt, _ in lines] == [
            ("start", "1"),
            ("start", "2"),
            ("done", "2"),
        ], lines
        assert hung[0]["pid"] == int(lines[0][2]), "the watchdog killed another process"
        assert int(lines[1][2]) != int(lines[0][2])
    finally:
        # Workers first: while the supervisor lives, their pids cannot be reused.
        pids |= {e["pid"] for e in log_events(err) if e["event"].startswith("supervisor.")}
        left = [pid for pid in pids if ours(pid)]
        for pid in [*left, proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert not left, f"worker processes outlived the supervisor: {left}"

    reader = Engine(db_url)
    try:
        view = reader.get(job)
        assert (view.state, view.attempt) == ("succeeded", 2), view.last_error
        assert [(e.trigger, e.attempt, e.to_state) for e in view.history] == [
            ("enqueue", 0, "pending"),
            ("start", 1, "running"),
            ("expire", 1, "retry_wait"),
            ("start", 2, "running"),
            ("succeed", 2, "succeeded"),
        ]
    finally:
        reader.close()
