"""Chart versions in the database: every version any process registered (its markup, so
a job is drawn and checked on the chart it ran under), and the jobs in flight per version
and state (what a deploy is checked against)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from engine.store.database import Database
from engine.store.keys import dialect_insert
from engine.store.schema import chart_versions, jobs


@dataclass(frozen=True, slots=True)
class ChartVersion:
    """One recorded version of a chart."""

    chart: str
    version: str
    label: str | None
    markup: dict[str, Any]
    first_seen_at: datetime


@dataclass(frozen=True, slots=True)
class InFlight:
    """Unfinished jobs of one kind in one state, under one recorded chart version."""

    kind: str
    chart: str
    chart_version: str | None
    state: str
    jobs: int
    attempts: int  # the most attempts any of them has made in that state
    budget: int  # the largest attempt budget any of them holds (set when it entered)


class VersionQueries(Database):
    """Chart versions and the jobs in flight; mixed into ``Store``."""

    def chart_versions_record(self, versions: Sequence[ChartVersion]) -> None:
        """Record versions seen for the first time (one seen before keeps its first row)."""
        if not versions:
            return
        stmt = dialect_insert(self.dialect, chart_versions).on_conflict_do_nothing(
            index_elements=["chart", "version"]
        )
        params = [
            {
                "chart": v.chart,
                "version": v.version,
                "label": v.label or None,
                "markup": v.markup,
                "first_seen_at": v.first_seen_at,
            }
            for v in versions
        ]
        with self.write() as conn:
            conn.execute(stmt, params)

    def chart_versions_of(self, chart: str) -> dict[str, ChartVersion]:
        """Every recorded version of ``chart``, oldest first."""
        stmt = (
            select(chart_versions)
            .where(chart_versions.c.chart == chart)
            .order_by(chart_versions.c.first_seen_at, chart_versions.c.version)
        )
        with self.read() as conn:
            return {row.version: ChartVersion(**row._mapping) for row in conn.execute(stmt)}

    def job_in_flight(self, kinds: Sequence[str]) -> list[InFlight]:
        """Unfinished jobs of ``kinds`` grouped by chart version and state."""
        if not kinds:
            return []
        stmt = (
            select(
                jobs.c.kind,
                jobs.c.chart,
                jobs.c.chart_version,
                jobs.c.state,
                func.count(),
                func.max(jobs.c.attempt),
                func.max(jobs.c.max_attempts),
            )
            .where(jobs.c.finished_at.is_(None), jobs.c.kind.in_(list(kinds)))
            .group_by(jobs.c.kind, jobs.c.chart, jobs.c.chart_version, jobs.c.state)
            .order_by(jobs.c.kind, jobs.c.state, jobs.c.chart_version)
        )
        with self.read() as conn:
            return [
                InFlight(r[0], r[1], r[2], r[3], int(r[4]), int(r[5] or 0), int(r[6] or 0))
                for r in conn.execute(stmt)
            ]
