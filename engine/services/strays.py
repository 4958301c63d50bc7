"""Sweep strays: the rows a claim would never take as they are (engine.strays says which
and why). Due rows are judged by the claim itself; this pass finds the rest (waiting for a
later time, parked by a rescue, or with no due time at all), migrates or sets aside what
it can, and counts what stays stranded so every worker reports it every minute.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from engine.runtime import Runtime
from engine.store import JobRow, Move
from engine.strays import Verdict, judge, report_move


@dataclass(frozen=True)
class StrayConfig:
    page: int = 500  # rows read per query
    max_rows: int = 50_000  # rows looked at per pass (the rest wait for the next pass)


@dataclass
class Sweep:
    """What one pass found: each stray with its verdict, what was applied, what stays."""

    verdicts: list[tuple[JobRow, Verdict]] = field(default_factory=list)
    applied: list[tuple[JobRow, Move]] = field(default_factory=list)

    @property
    def stranded(self) -> Counter[tuple[str, str, str | None]]:
        """(kind, state, chart version) -> jobs left where they are."""
        return Counter(
            (row.kind, row.state, row.chart_version)
            for row, verdict in self.verdicts
            if verdict.move is None
        )


class StraySweeper:
    def __init__(self, rt: Runtime, config: StrayConfig | None = None) -> None:
        self.rt = rt
        self.config = config or StrayConfig()

    def run_once(self, now: datetime, *, apply: bool = True) -> Sweep:
        """One pass over the strays; ``apply`` False only judges them (a dry run)."""
        rt, config = self.rt, self.config
        known = rt.registry.known_states
        sweep = Sweep()
        after = 0
        seen = 0
        while seen < config.max_rows:
            rows = rt.store.job_strays(known, after_id=after, limit=config.page)
            for row in rows:
                verdict = judge(rt.moves, rt.registry.get(row.kind), row, now)
                if verdict is not None:
                    sweep.verdicts.append((row, verdict))
            seen += len(rows)
            if len(rows) < config.page:
                break
            after = rows[-1].id
        if apply:
            planned = [(row, v.move) for row, v in sweep.verdicts if v.move is not None]
            done = rt.store.job_transition_many([move for _, move in planned])
            for (row, move), ok in zip(planned, done, strict=True):
                if ok:
                    sweep.applied.append((row, move))
                    report_move(rt.telemetry, row, move)
        stranded = sweep.stranded
        if stranded and apply:
            rt.telemetry.warning(
                "jobs.stranded",
                jobs=sum(stranded.values()),
                by_kind_state={
                    f"{k}:{s}@{v or 'unrecorded'}": n for (k, s, v), n in stranded.items()
                },
                hint="a deploy removed or renamed these states without a migration: "
                "run `jobcharts check --db URL` and `jobcharts migrate-jobs`",
            )
        return sweep
