"""Enqueue throughput, one call per job and 1,000 jobs per call, with and without a dedupe
key, on any database (``python -m engine.harness.bench_enqueue URL [JOBS]``).

Each figure is the median of 3 runs; every run checks that each enqueue made one job
(the keyed runs use fresh keys) and the database holds them all.
"""

from __future__ import annotations

import statistics
import sys
import time
import uuid

from pydantic import BaseModel

from engine.engine import Engine
from engine.registry import Invariant


class Numbered(BaseModel):
    n: int
    run: str = ""


def measure(url: str, jobs: int = 2000, runs: int = 3) -> dict[str, float]:
    """Jobs per second of each way to enqueue (median of ``runs``), each run checked."""
    engine = Engine(url)
    engine.job(payload=Numbered, idempotency=Invariant("a no-op"), kind="plain")(lambda c, p: None)
    engine.job(payload=Numbered, idempotency=lambda p: f"{p.run}:{p.n}", kind="keyed")(
        lambda c, p: None
    )
    figures: dict[str, float] = {}
    try:
        for kind in ("plain", "keyed"):
            for mode in ("single", "bulk"):
                rates = []
                for _ in range(runs):
                    run = uuid.uuid4().hex[:8]
                    payloads = [{"n": n, "run": run} for n in range(jobs)]
                    started = time.perf_counter()
                    if mode == "single":
                        ids = [engine.enqueue(kind, p) for p in payloads]
                    else:
                        ids = []
                        for first in range(0, jobs, 1000):
                            ids += engine.enqueue_many(kind, payloads[first : first + 1000])
                    rates.append(jobs / (time.perf_counter() - started))
                    if len(set(ids)) != jobs:
                        raise SystemExit(f"{kind} {mode}: {len(set(ids))} jobs for {jobs} calls")
                figures[f"{kind} {mode}"] = statistics.median(rates)
    finally:
        engine.close()
    return figures


def measure_async(url: str, jobs: int = 2000, tasks: int = 10) -> dict[str, float]:
    """Jobs per second of ``await aenqueue()`` one after another, from ``tasks`` tasks at
    once (a web app's concurrent requests), and ``await aenqueue_many()`` of 1,000; each
    run checked (one job per call)."""
    import asyncio

    engine = Engine(url)
    engine.job(payload=Numbered, idempotency=Invariant("a no-op"), kind="plain")(lambda c, p: None)

    async def run() -> dict[str, float]:
        figures: dict[str, float] = {}
        await engine.aenqueue("plain", {"n": -1})  # the pool and the once-per-kind checks
        payloads = [{"n": n} for n in range(jobs)]
        started = time.perf_counter()
        ids = [await engine.aenqueue("plain", p) for p in payloads]
        figures["async single"] = jobs / (time.perf_counter() - started)
        started = time.perf_counter()
        share = jobs // tasks

        async def one_task(t: int) -> list[int]:
            return [
                await engine.aenqueue("plain", p) for p in payloads[t * share : (t + 1) * share]
            ]

        parts = await asyncio.gather(*(one_task(t) for t in range(tasks)))
        figures[f"async single, {tasks} tasks"] = share * tasks / (time.perf_counter() - started)
        ids += [i for part in parts for i in part]
        started = time.perf_counter()
        for first in range(0, jobs, 1000):
            ids += await engine.aenqueue_many("plain", payloads[first : first + 1000])
        figures["async bulk"] = jobs / (time.perf_counter() - started)
        await engine.aclose()
        if len(set(ids)) != len(ids):
            raise SystemExit(f"async enqueue: {len(set(ids))} jobs for {len(ids)} calls")
        return figures

    try:
        return asyncio.run(run())
    finally:
        engine.close()


def main() -> None:
    url = sys.argv[1]
    jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    for name, rate in measure(url, jobs).items():
        print(f"{name:>13}: {rate:>9,.0f} jobs/s (median of 3)")


if __name__ == "__main__":
    main()
