"""An app for the watchdog test's worker: ``--app tests.engine.worker.watchdog_app:engine``.

Kind ``gil_hang`` holds the GIL for hours on its first attempt (catastrophic backtracking
in ``re``, a C call that never releases it) and returns at once on later attempts. It
appends ``start``/``done`` lines (attempt, pid) to the file named in its payload.
"""

from __future__ import annotations

import os
import re

from pydantic import BaseModel

from engine import Engine, JobContext, RetryPolicy

QUICK_RETRIES = RetryPolicy(max_attempts=3, base=0, jitter=0)


class Hang(BaseModel):
    tag: str
    runs: str  # the file the handler appends its start/done lines to


def note(path: str, what: str, ctx: JobContext) -> None:
    with open(path, "a") as runs:
        runs.write(f"{what} {ctx.attempt} {os.getpid()}\n")


def make(url: str | None = None) -> Engine:
    """An engine with the one kind, on ``url`` (or the CLI's ``--db``)."""
    engine = Engine(url)

    @engine.job(payload=Hang, idempotency=lambda p: f"gil_hang:{p.tag}", retry=QUICK_RETRIES)
    def gil_hang(ctx: JobContext, p: Hang) -> str:
        note(p.runs, "start", ctx)
        if ctx.attempt == 1:
            # 2**40 backtracking steps inside _sre: every thread of the process freezes.
            re.match(r"(a+)+$", "a" * 40 + "b")
        note(p.runs, "done", ctx)
        return p.tag

    return engine


engine = make()
