"""Why one shared Machine and a probe: time four ways to fire a transition for a job.

Run: ``python -m statecharts.bench``. Prints microseconds per fired transition (median of
``repeat`` runs) for: a Machine built per job; one Machine with ``add_model`` per job and
models left to pile up (measured at 1k and 20k models); ``add_model`` + ``remove_model``;
and ``CompiledChart.fire`` (the shared machine's event API with a throwaway probe).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from statecharts.chart import Facts
from statecharts.lifecycle import lifecycle
from statecharts.machine import CompiledChart, bare_machine, compile_chart


class _Job:
    def __init__(self) -> None:
        self.state = "running"


def _median_us(fn: Callable[[int], None], n: int, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn(n)
        samples.append((time.perf_counter() - started) / n * 1e6)
    return statistics.median(samples)


def _specs(compiled: CompiledChart) -> dict[str, Any]:
    return {
        "states": list(compiled.chart.state_names),
        "transitions": [
            {"trigger": t.trigger, "source": list(t.sources), "dest": t.dest}
            for t in compiled.chart.transitions
            if not t.guards
        ],
        "auto_transitions": False,
    }


def main(repeat: int = 5) -> None:
    compiled = compile_chart(lifecycle())
    spec = _specs(compiled)
    facts = Facts(attempt=1, max_attempts=3)

    def machine_per_job(n: int) -> None:
        for _ in range(n):
            job = _Job()
            bare_machine(model=job, initial="running", **spec)
            job.succeed()  # type: ignore[attr-defined]

    def piled_up(existing: int) -> Callable[[int], None]:
        shared = bare_machine(model=None, initial="running", **spec)
        for _ in range(existing):
            shared.add_model(_Job())

        def run(n: int) -> None:
            for _ in range(n):
                job = _Job()
                shared.add_model(job)
                job.succeed()  # type: ignore[attr-defined]

        return run

    shared = bare_machine(model=None, initial="running", **spec)

    def add_remove(n: int) -> None:
        for _ in range(n):
            job = _Job()
            shared.add_model(job)
            job.succeed()  # type: ignore[attr-defined]
            shared.remove_model(job)

    def probe(n: int) -> None:
        for _ in range(n):
            compiled.fire("running", "succeed", facts)

    cases = [
        ("Machine per job", machine_per_job, 2_000),
        ("shared Machine, add_model, 1k models piled up", piled_up(1_000), 1_000),
        ("shared Machine, add_model, 20k models piled up", piled_up(20_000), 1_000),
        ("shared Machine, add_model + remove_model", add_remove, 5_000),
        ("CompiledChart.fire (shared Machine, probe)", probe, 20_000),
    ]
    rows = [(name, _median_us(fn, n, repeat)) for name, fn, n in cases]
    width = max(len(name) for name, _ in rows)
    for name, us in rows:
        print(f"{name:<{width}}  {us:8.1f} us per transition")


if __name__ == "__main__":
    main()
