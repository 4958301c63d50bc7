"""Retention: workers prune finished jobs on the app's policy, so history does not grow
for ever and nobody has to remember ``jobcharts prune``.

A policy is a list of rules, each "jobs of this kind (or any kind) that ended in this
final state go this long after they finished" (``Engine.retain``). A state no rule names
is kept (quarantined jobs wait for an operator: keep them unless you say otherwise). Each
pass deletes in small batches, each its own short transaction, and on PostgreSQL only one
worker prunes at a time. Dedupe keys outlive their jobs until their TTL, as with
``jobcharts prune``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from engine.runtime import Runtime

BATCH = 500  # jobs per transaction: short locks, even on a big backlog
MAX_BATCHES = 200  # per pass: the rest waits for the next pass


@dataclass(frozen=True)
class Rule:
    """Delete jobs of ``kind`` (None: any kind no rule of its own names) that ended in
    ``state`` ``after`` their end."""

    state: str
    after: timedelta
    kind: str | None = None


class Retention:
    """The policy's rules, and one pass of pruning by them."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.rules: list[Rule] = []

    def add(self, rule: Rule) -> None:
        if rule.after < timedelta(0):
            raise ValueError(f"retention of {rule.state!r}: after must be >= 0, got {rule.after}")
        if any((r.state, r.kind) == (rule.state, rule.kind) for r in self.rules):
            raise ValueError(f"retention of {rule.state!r} for kind {rule.kind!r} is set twice")
        self.rules.append(rule)

    def run_once(self, now: datetime) -> tuple[int, int]:
        """Prune by every rule, kind-specific rules first; returns (jobs, keys) deleted."""
        jobs_deleted = keys_deleted = 0
        for rule in sorted(self.rules, key=lambda r: r.kind is None):
            own = [r.kind for r in self.rules if r.state == rule.state and r.kind is not None]
            for _ in range(MAX_BATCHES):
                pruned, keys = self.rt.store.job_prune(
                    finished_before=now - rule.after,
                    states=[rule.state],
                    now=now,
                    limit=BATCH,
                    kinds=[rule.kind] if rule.kind is not None else None,
                    not_kinds=[k for k in own if k is not None] if rule.kind is None else (),
                    exclusive=True,
                )
                jobs_deleted += pruned
                keys_deleted += keys
                if pruned < BATCH:
                    break
        if jobs_deleted or keys_deleted:
            self.rt.telemetry.info(
                "jobs.pruned", jobs=jobs_deleted, keys=keys_deleted, by="retention"
            )
        return jobs_deleted, keys_deleted
