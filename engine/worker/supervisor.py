"""``jobcharts worker --processes N``: run N worker processes on one database.

The processes share nothing but the database: claims, leases and fencing keep one attempt
from ever running twice at once. The supervisor restarts a worker that dies (crash, OOM
kill) after a short, growing delay, forwards SIGINT/SIGTERM to all of them (each then
stops gracefully; a second signal makes them exit at once) and exits when all have exited.

Its watchdog restarts a worker that hangs. A handler stuck in a C call that holds the GIL
freezes every thread of its process: no timeout fires, no lease is renewed, SIGTERM is
never handled. So each worker touches a heartbeat file from its loop about once a second
(``--heartbeat-file``); one silent for ``watchdog`` seconds is SIGKILLed and restarted like
a crashed one, and its jobs are rescued once their leases expire (the attempt counted).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

logger = structlog.get_logger("jobcharts")

RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0
# Before its first beat a worker imports its app and opens (maybe migrates) the database:
# it gets at least this long, whatever the watchdog.
STARTUP_ALLOWANCE = 60.0


@dataclass
class Heartbeat:
    """One child's heartbeat file, as the watchdog sees it.

    The file's modification time is only compared with its previous value, never with the
    clock: a change means a beat, timed on the supervisor's monotonic clock, so a wall
    clock that jumps cannot make a live worker look silent.
    """

    path: Path
    since: float = field(default_factory=time.monotonic)  # the child's start, then last beat
    mtime: int | None = None  # None: no beat yet, the child is still starting

    def silence(self) -> float:
        """Seconds since the child last beat (or started, before its first beat)."""
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            mtime = None
        if mtime is not None and mtime != self.mtime:
            self.mtime, self.since = mtime, time.monotonic()
        return time.monotonic() - self.since


def supervise(
    processes: int,
    child_args: list[str],
    *,
    watchdog: float = 60.0,
    metrics: tuple[str, int] | None = None,
) -> int:
    """Run ``processes`` copies of ``jobcharts <child_args>`` (a ``worker`` command, last);
    returns the exit status.

    ``watchdog``: SIGKILL and restart a child whose heartbeat is this many seconds old
    (0: never). ``metrics``: (address, port) where the supervisor serves one view of all
    its children's metrics (prometheus_client's multiprocess mode: each child writes its
    figures to files in a directory the supervisor reads).
    """
    command = [sys.executable, "-m", "engine.cli", *child_args]
    child_env = dict(os.environ)
    metrics_dir = None
    if metrics is not None:
        metrics_dir = tempfile.mkdtemp(prefix="jobcharts-metrics-")
        child_env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        command.append("--metrics-child")
        _serve_children(metrics_dir, *metrics)
    children: dict[int, subprocess.Popen[bytes]] = {}
    beats: dict[int, Heartbeat] = {}
    beat_dir = Path(tempfile.mkdtemp(prefix="jobcharts-heartbeats-")) if watchdog > 0 else None
    delays = dict.fromkeys(range(processes), RESTART_DELAY)
    restart_at: dict[int, float] = {}
    stopping: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    def spawn(slot: int, event: str) -> None:
        args = command
        if beat_dir is not None:
            beats[slot] = Heartbeat(beat_dir / f"worker-{slot}")
            beats[slot].path.unlink(missing_ok=True)  # its dead predecessor's beats
            args = [*command, "--heartbeat-file", str(beats[slot].path)]
        # Our own interpreter running our own module; the arguments came from our CLI.
        # A session of its own: a terminal's Ctrl-C reaches the supervisor only, which
        # forwards it once.
        children[slot] = subprocess.Popen(args, start_new_session=True, env=child_env)  # noqa: S603
        logger.info(event, slot=slot, pid=children[slot].pid)
        if stopping:  # a signal came while it started: forward() did not know it yet
            children[slot].send_signal(stopping[-1])

    def check_heartbeat(slot: int, child: subprocess.Popen[bytes]) -> None:
        """SIGKILL a child that stopped beating; the loop then restarts it as crashed.

        Also while stopping: a frozen worker never handles the forwarded signal.
        """
        beat = beats.get(slot)
        if beat is None:
            return
        limit = watchdog if beat.mtime is not None else max(watchdog, STARTUP_ALLOWANCE)
        silence = beat.silence()
        if silence < limit:
            return
        logger.error(
            "supervisor.worker_hung",
            slot=slot,
            pid=child.pid,
            silent_for=round(silence, 1),
            hint="its loop stopped (a handler holding the GIL?): killed; its jobs are "
            "rescued when their leases expire",
        )
        child.kill()
        beat.since = time.monotonic()  # not again before it had time to die

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for slot in range(processes):
            spawn(slot, "supervisor.started")
        while True:
            alive = 0
            for slot, child in list(children.items()):
                code = child.poll()
                if code is None:
                    alive += 1
                    check_heartbeat(slot, child)
                    continue
                if stopping or code == 0:
                    continue  # stopped on purpose, or finished (--until-idle / --max-ticks)
                now = time.monotonic()
                if slot not in restart_at:
                    logger.warning("supervisor.worker_died", slot=slot, pid=child.pid, code=code)
                    if metrics_dir is not None:  # its gauges leave the view; counters stay
                        _mark_dead(child.pid, metrics_dir)
                    restart_at[slot] = now + delays[slot]
                    delays[slot] = min(delays[slot] * 2, MAX_RESTART_DELAY)
                    alive += 1
                elif now >= restart_at[slot]:
                    del restart_at[slot]
                    spawn(slot, "supervisor.restarted")
                    alive += 1
                else:
                    alive += 1
            if alive == 0:
                break
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if beat_dir is not None:
            shutil.rmtree(beat_dir, ignore_errors=True)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    codes = [child.returncode for child in children.values()]
    return 0 if all(code == 0 for code in codes) or stopping else 1


def _serve_children(directory: str, address: str, port: int) -> None:
    """Serve /metrics: the sum of the children's counters and histograms, the gauges of
    the live ones (one of them publishes the database's figures)."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    start_http_server(port, addr=address, registry=registry)
    logger.info("supervisor.metrics", address=address, port=port)


def _mark_dead(pid: int, directory: str) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
