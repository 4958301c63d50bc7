"""The app of the browser tests: ``--app tests.engine.web.browser_app:engine`` (the test
passes ``--db``).

Kinds: ``work`` sleeps a moment and succeeds (so a watcher sees counts move), ``flaky``
fails permanently until its marker file exists, creating it as it fails (so a requeue
succeeds), ``reject`` always fails permanently.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel

from engine import Engine, JobContext, Permanent


class Work(BaseModel):
    n: int
    seconds: float = 0.3


class Marker(BaseModel):
    marker: str


def build() -> Engine:
    app = Engine()

    @app.job(payload=Work, idempotency=lambda p: f"work:{p.n}")
    def work(ctx: JobContext, p: Work) -> int:
        time.sleep(p.seconds)
        return p.n

    @app.job(payload=Marker, idempotency=lambda p: f"flaky:{p.marker}")
    def flaky(ctx: JobContext, p: Marker) -> str:
        marker = Path(p.marker)
        if not marker.exists():
            marker.write_text("fixed by the time of the next run\n")
            raise Permanent("the upstream refused the order: not fixed yet")
        return "shipped"

    @app.job(payload=Marker, idempotency=lambda p: f"reject:{p.marker}")
    def reject(ctx: JobContext, p: Marker) -> None:
        raise Permanent(f"{p.marker} can never ship")

    return app


engine = build()
