"""An app with global limits, for the tests that run several worker processes:
``--app tests.engine.limits_app:engine``.

``capped`` (at most 2 running) and ``paced`` (at most 3 starts per second) record when
their handler began and ended in the file named by the payload, so a test can check the
limits held across processes by the handlers' own clocks; ``free`` has no limit.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from pydantic import BaseModel

from engine import Engine, Invariant, JobContext, Rate

engine = Engine()

CAPPED = 2
PACED = Rate(3, per=1.0)


class Timed(BaseModel):
    log: str  # a file the handler appends "<job id> <begin> <end>" to
    seconds: float = 0.3


def record(ctx: JobContext, p: Timed) -> None:
    began = time.time()
    time.sleep(p.seconds)
    line = f"{ctx.job_id} {began!r} {time.time()!r} {os.getpid()}\n"
    with Path(p.log).open("a") as out:
        out.write(line)


HARMLESS = Invariant("it only appends a line to a test's log file")

engine.job(payload=Timed, idempotency=HARMLESS, concurrency=CAPPED, kind="capped")(record)
engine.job(payload=Timed, idempotency=HARMLESS, rate=PACED, kind="paced")(record)
engine.job(payload=Timed, idempotency=HARMLESS, kind="free")(record)
