"""``jobcharts worker --processes N``: run N worker processes on one database.

The processes share nothing but the database: claims, leases and fencing keep one attempt
from ever running twice at once. The supervisor restarts a worker that dies (crash, OOM
kill) after a short, growing delay, forwards SIGINT/SIGTERM to all of them (each then
stops gracefully; a second signal makes them exit at once) and exits when all have exited.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

import structlog

logger = structlog.get_logger("jobcharts")

RESTART_DELAY = 0.5
MAX_RESTART_DELAY = 30.0


def supervise(processes: int, child_args: list[str]) -> int:
    """Run ``processes`` copies of ``jobcharts <child_args>``; returns the exit status."""
    command = [sys.executable, "-m", "engine.cli", *child_args]
    children: dict[int, subprocess.Popen[bytes]] = {}
    delays = dict.fromkeys(range(processes), RESTART_DELAY)
    restart_at: dict[int, float] = {}
    stopping: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        stopping.append(signum)
        for child in children.values():
            if child.poll() is None:
                child.send_signal(signum)

    def spawn(slot: int, event: str) -> None:
        # Our own interpreter running our own module; the arguments came from our CLI.
        # A session of its own: a terminal's Ctrl-C reaches the supervisor only, which
        # forwards it once.
        children[slot] = subprocess.Popen(command, start_new_session=True)  # noqa: S603
        logger.info(event, slot=slot, pid=children[slot].pid)
        if stopping:  # a signal came while it started: forward() did not know it yet
            children[slot].send_signal(stopping[-1])

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
                    continue
                if stopping or code == 0:
                    continue  # stopped on purpose, or finished (--until-idle / --max-ticks)
                now = time.monotonic()
                if slot not in restart_at:
                    logger.warning("supervisor.worker_died", slot=slot, pid=child.pid, code=code)
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
    codes = [child.returncode for child in children.values()]
    return 0 if all(code == 0 for code in codes) or stopping else 1
