"""A test app for process isolation: a handler that hangs, one that dies, one that reports."""

from __future__ import annotations

import os
import subprocess
import time

from pydantic import BaseModel

from engine import Engine, RetryPolicy

engine = Engine()
RETRY = RetryPolicy(max_attempts=3, base=0, jitter=0)


class Job(BaseModel):
    n: int


@engine.job(payload=Job, idempotency=lambda p: f"hang:{p.n}", timeout=0.5, retry=RETRY)
def hang(ctx, p: Job) -> int:  # type: ignore[no-untyped-def]
    if ctx.attempt == 1:
        time.sleep(60)  # only a kill ends this
    return os.getpid()


@engine.job(payload=Job, idempotency=lambda p: f"spawn:{p.n}", timeout=0.5, retry=RETRY)
def spawn(ctx, p: Job) -> int:  # type: ignore[no-untyped-def]
    """Starts a long child process, records its pid (ISO_GRANDCHILD), then hangs."""
    if ctx.attempt == 1:
        child = subprocess.Popen(["sleep", "300"])
        with open(os.environ["ISO_GRANDCHILD"], "w") as out:
            out.write(str(child.pid))
        time.sleep(60)
    return os.getpid()


@engine.job(payload=Job, idempotency=lambda p: f"die:{p.n}", timeout=5, retry=RETRY)
def die(ctx, p: Job) -> int:  # type: ignore[no-untyped-def]
    if ctx.attempt == 1:
        os._exit(7)  # the handler takes its whole process down
    return os.getpid()


@engine.job(payload=Job, idempotency=lambda p: f"echo:{p.n}", timeout=5, retry=RETRY)
def echo(ctx, p: Job) -> int:  # type: ignore[no-untyped-def]
    print("a handler's print must not break the protocol")
    return os.getpid()


@engine.job(payload=Job, idempotency=lambda p: f"slow:{p.n}", timeout=30, retry=RETRY)
def slow(ctx, p: Job) -> int:  # type: ignore[no-untyped-def]
    marker = os.environ.get("ISO_STARTED_MARKER")
    if marker:
        open(marker, "w").close()
    time.sleep(1.5)
    return os.getpid()
