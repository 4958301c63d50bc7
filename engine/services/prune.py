"""Prune: delete final jobs (with their events and steps) finished long enough ago.

Quarantined jobs wait for an operator, so they stay unless asked. Dedupe keys outlive their
jobs until their TTL: pruning never reopens a key early.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.runtime import Runtime
from statecharts import S, lifecycle


@dataclass(frozen=True)
class PruneConfig:
    older_than: timedelta
    include_quarantined: bool = False


class Pruner:
    def __init__(self, rt: Runtime, config: PruneConfig) -> None:
        self.rt = rt
        self.config = config

    def run_once(self, now: datetime) -> tuple[int, int]:
        """Prune until nothing is left to prune; returns (jobs deleted, keys deleted)."""
        config = self.config
        states = {
            state.name
            for chart in [*self.rt.registry.charts, lifecycle()]
            for state in chart.states
            if state.is_final and (config.include_quarantined or state.name != S.QUARANTINED)
        }
        jobs_deleted = keys_deleted = 0
        while True:
            pruned, keys = self.rt.store.job_prune(
                finished_before=now - config.older_than, states=sorted(states), now=now
            )
            jobs_deleted += pruned
            keys_deleted += keys
            if pruned == 0:
                break
        self.rt.telemetry.info(
            "jobs.pruned", jobs=jobs_deleted, keys=keys_deleted, older_than=str(config.older_than)
        )
        return jobs_deleted, keys_deleted
