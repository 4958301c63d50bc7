"""The event loop async handlers run on: one per process, in a thread of its own.

A worker's handler threads stay the unit of concurrency (``-c``): a thread given an async
attempt hands the coroutine to this loop and waits for it, so sync and async handlers
share one worker and one limit. The loop bounds each attempt by its timeout and cancels
the task when it runs over (its late result can never arrive). A coroutine may await for
as long as it likes: leases are renewed by the worker, not by the handler.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any

_lock = threading.Lock()
_shared: dict[int, LoopThread] = {}  # by process id: a forked child starts its own


class HandlerTimeout(Exception):
    """An async handler ran past its timeout; its task was cancelled."""


class LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="jobcharts-async", daemon=True
        )
        self.thread.start()

    def run(self, coroutine: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
        """Run ``coroutine`` on the loop and wait for its result (from another thread);
        past ``timeout`` seconds its task is cancelled and HandlerTimeout raised."""
        future = asyncio.run_coroutine_threadsafe(_bounded(coroutine, timeout), self.loop)
        return future.result()


async def _bounded(coroutine: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
    try:
        return await asyncio.wait_for(coroutine, timeout)
    except TimeoutError:
        raise HandlerTimeout(
            f"the async handler ran longer than its timeout of {timeout:g}s; its task was cancelled"
        ) from None


def shared_loop() -> LoopThread:
    """This process's loop for async handlers (started on first use)."""
    pid = os.getpid()
    loop = _shared.get(pid)
    if loop is None:
        with _lock:
            loop = _shared.get(pid)
            if loop is None:
                loop = _shared[pid] = LoopThread()
    return loop


def run_coroutine(coroutine: Coroutine[Any, Any, Any], timeout: float | None) -> Any:
    """Run an async handler's coroutine to its end (or its timeout) from a handler thread.

    Called from a thread that is itself running an event loop (a test or script calling
    ``engine.tick()`` from async code), it still runs on the shared loop: never nested."""
    return shared_loop().run(coroutine, timeout)
