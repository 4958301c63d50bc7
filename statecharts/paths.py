"""Check that a recorded history is a path through its chart (or, for a job that lived
through deploys, through each version of its chart in turn)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from statecharts.chart import Chart

MIGRATE = "migrate"  # the move out of a state a newer version removed, as it declares


@dataclass(frozen=True)
class Step:
    """One recorded move; ``source`` is None for the creation of the job.

    ``versions``: (before, after) when this move took the job to another version of its
    chart; ``override``: a move the engine or an operator made off the chart's edges (a
    corrupt row set aside, a cancel of a job in a state its chart lacks), checked only for
    where it starts.
    """

    trigger: str
    source: str | None
    dest: str
    versions: tuple[str | None, str] | None = None
    override: bool = False


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


def versioned_path_errors(
    charts: Mapping[str | None, Chart], steps: Sequence[Step], version: str | None
) -> list[str]:
    """Every way ``steps`` fails to be a path through the versions it ran under: each part
    along its own version's edges (``charts``: version -> chart), each switch by an edge
    of the new version or a migration it declares. ``version``: the job's version now."""
    if not steps:
        return ["the history is empty"]
    switch = next((s.versions for s in steps if s.versions is not None), None)
    current = switch[0] if switch is not None else version
    chart = charts.get(current)
    if chart is None:
        return [f"chart version {current} is not recorded"]
    errors = path_errors(chart, steps[:1])
    state = steps[0].dest
    for index, step in enumerate(steps[1:], start=1):
        if step.source != state:
            errors.append(
                f"step {index} ({step.trigger}) leaves {step.source!r} but the job was in {state!r}"
            )
        if step.versions is not None:
            current = step.versions[1]
            found = charts.get(current)
            if found is None:
                errors.append(f"step {index}: chart version {current} is not recorded")
                break
            chart = found
        if step.override:
            pass
        elif step.trigger == MIGRATE:
            migration = chart.migration_for(step.source or "")
            if step.versions is None or migration is None or migration.new != step.dest:
                errors.append(
                    f"step {index}: {step.source!r} --migrate--> {step.dest!r} is not a "
                    f"migration version {current} of chart {chart.name!r} declares"
                )
        elif step.source is None or not chart.edge_exists(step.trigger, step.source, step.dest):
            errors.append(
                f"step {index}: {step.source!r} --{step.trigger}--> {step.dest!r} is not a "
                f"declared transition of chart {chart.name!r} version {current}"
            )
        state = step.dest
    return errors
