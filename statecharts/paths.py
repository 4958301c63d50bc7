"""Check that a recorded history is a path through its chart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from statecharts.chart import Chart


@dataclass(frozen=True)
class Step:
    """One recorded move; ``source`` is None for the creation of the job."""

    trigger: str
    source: str | None
    dest: str


def path_errors(chart: Chart, steps: Sequence[Step]) -> list[str]:
    """Every way ``steps`` fails to be a path from the initial state; empty when valid."""
    errors: list[str] = []
    if not steps:
        return ["the history is empty"]
    first = steps[0]
    if first.source is not None or first.dest != chart.initial.name:
        errors.append(
            f"the history must start by creating the job in {chart.initial.name!r}, "
            f"not with {first.trigger!r} {first.source!r} -> {first.dest!r}"
        )
    current = first.dest
    for index, step in enumerate(steps[1:], start=1):
        if step.source != current:
            errors.append(
                f"step {index} ({step.trigger}) leaves {step.source!r} but the job was in "
                f"{current!r}"
            )
        if step.source is None or not chart.edge_exists(step.trigger, step.source, step.dest):
            errors.append(
                f"step {index}: {step.source!r} --{step.trigger}--> {step.dest!r} is not a "
                f"declared transition of chart {chart.name!r}"
            )
        current = step.dest
    return errors


def is_path(chart: Chart, steps: Sequence[Step]) -> bool:
    """True when ``steps`` is a valid path through ``chart`` from its initial state."""
    return not path_errors(chart, steps)
