"""A deploy checked against the jobs in flight: what the registered charts change for the
jobs the database holds, before (``jobcharts check --db``) or while a deploy rolls out.

Breaking: jobs sit in a state the new version removed and declares no migration for
(they would be stranded), or in a state whose kind changed (work became a wait, say).
Reported, not breaking: migrations that will move jobs, triggers an old version had from a
state where jobs now wait, retry budgets lowered below what in-flight jobs hold (each
keeps the budget it entered its state with), and states of recorded versions left without
a destination while no job is in them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.registry import Registry
from engine.store import Store
from engine.store.versions import ChartVersion, InFlight
from statecharts import Chart
from statecharts.versions import chart_from_markup

Severity = Literal["breaking", "migrates", "changed", "note"]


@dataclass(frozen=True)
class Finding:
    """One thing a deploy does to jobs in flight (or could do)."""

    severity: Severity
    chart: str
    state: str
    jobs: int
    message: str


def check_deploy(registry: Registry, store: Store) -> list[Finding]:
    """Every finding for the charts ``registry`` registers against ``store``'s jobs."""
    findings: list[Finding] = []
    flying = store.job_in_flight(registry.kinds)
    for name, (chart, version) in sorted(registry.versions.items()):
        recorded = store.chart_versions_of(name)
        groups = [g for g in flying if registry.get(g.kind).chart.name == name]
        findings += _in_flight(registry, chart, version, groups, recorded)
        findings += _orphaned(chart, version, groups, recorded)
    return findings


def _in_flight(
    registry: Registry,
    chart: Chart,
    version: str,
    groups: list[InFlight],
    recorded: dict[str, ChartVersion],
) -> list[Finding]:
    found: list[Finding] = []
    for group in groups:
        spec = registry.get(group.kind)
        was = f"version {group.chart_version or '(unrecorded)'}"
        where = f"{group.jobs} job(s) of {group.kind!r} in {group.state!r} ({was})"
        if not chart.has_state(group.state):
            migration = chart.migration_for(group.state)
            if migration is None:
                found.append(
                    Finding(
                        "breaking",
                        chart.name,
                        group.state,
                        group.jobs,
                        f"{where}: version {version} has no state {group.state!r} and declares "
                        f"no migration for it; they would be stranded. Declare "
                        f"Migration({group.state!r}, <state>) or keep the state",
                    )
                )
            else:
                found.append(
                    Finding(
                        "migrates",
                        chart.name,
                        group.state,
                        group.jobs,
                        f"{where} migrate to {migration.new!r}",
                    )
                )
            continue
        old = recorded.get(group.chart_version or "")
        if old is not None and group.chart_version != version:
            before = chart_from_markup(old.markup)
            was_kind, now_kind = _nature(before, group.state), _nature(chart, group.state)
            if was_kind != now_kind:
                found.append(
                    Finding(
                        "breaking",
                        chart.name,
                        group.state,
                        group.jobs,
                        f"{where}: {group.state!r} was a {was_kind} state and is a {now_kind} "
                        f"state in version {version}: those jobs would be handled as the new "
                        "kind (a step's work skipped, or a timer run as work). Give the new "
                        "state another name and declare a Migration from the old one",
                    )
                )
                continue
            lost = _exits(before, group.state) - _exits(chart, group.state)
            if lost:
                found.append(
                    Finding(
                        "changed",
                        chart.name,
                        group.state,
                        group.jobs,
                        f"{where}: version {version} no longer leaves {group.state!r} by "
                        f"{sorted(lost)}; they continue on the new version's transitions",
                    )
                )
        budget = spec.retry_for(group.state).max_attempts
        if group.state in spec.steps and budget < group.budget:
            found.append(
                Finding(
                    "note",
                    chart.name,
                    group.state,
                    group.jobs,
                    f"{where}: the retry budget of {group.state!r} is now {budget}; jobs in "
                    f"flight keep the budget they entered it with (up to {group.budget}; the "
                    f"most attempts made so far: {group.attempts})",
                )
            )
    return found


def _orphaned(
    chart: Chart, version: str, groups: list[InFlight], recorded: dict[str, ChartVersion]
) -> list[Finding]:
    """States of recorded versions that this one lacks, with no migration and no job in
    them: harmless now, and said so (a job of that version could still arrive)."""
    occupied = {g.state for g in groups}
    found: list[Finding] = []
    seen: set[str] = set()
    for old in recorded.values():
        if old.version == version:
            continue
        for state in chart_from_markup(old.markup).state_names:
            if chart.has_state(state) or chart.migration_for(state) or state in occupied:
                continue
            if state in seen:
                continue
            seen.add(state)
            found.append(
                Finding(
                    "note",
                    chart.name,
                    state,
                    0,
                    f"state {state!r} of recorded version {old.version} has no destination in "
                    f"version {version}; no job is in it now",
                )
            )
    return found


def _nature(chart: Chart, state: str) -> str:
    """What a state does with a job in it: work, poll, wait, or end it."""
    declared = chart.state(state)
    if declared.polls:
        return "polling"
    return str(declared.kind.value)


def _exits(chart: Chart, state: str) -> set[str]:
    return {t.trigger for t in chart.transitions if state in t.sources}
