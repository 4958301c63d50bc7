"""Chart versions in the database: every version any process registered (its markup, so
a job is drawn and checked on the chart it ran under), and the jobs in flight per version
and state (what a deploy is checked against)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from engine.store.database import Database
from engine.store.keys import dialect_insert
from engine.store.schema import chart_versions, job_kinds, jobs


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


@dataclass(frozen=True, slots=True)
class KindRecord:
    """A job kind as a worker last registered it."""

    kind: str
    app: str
    schema_hash: str
    payload_schema: dict[str, Any]
    updated_at: datetime


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

    def kind_records(self, kinds: Sequence[str]) -> dict[str, KindRecord]:
        """The recorded app and payload schema of each of ``kinds`` that has one."""
        if not kinds:
            return {}
        stmt = select(job_kinds).where(job_kinds.c.kind.in_(list(kinds)))
        with self.read() as conn:
            return {row.kind: KindRecord(**row._mapping) for row in conn.execute(stmt)}

    def kind_record(self, records: Sequence[KindRecord]) -> None:
        """Record (or replace) the app and payload schema of each kind."""
        if not records:
            return
        insert = dialect_insert(self.dialect, job_kinds)
        stmt = insert.on_conflict_do_update(
            index_elements=["kind"],
            set_={
                "app": insert.excluded.app,
                "schema_hash": insert.excluded.schema_hash,
                "payload_schema": insert.excluded.payload_schema,
                "updated_at": insert.excluded.updated_at,
            },
        )
        with self.write() as conn:
            conn.execute(stmt, [asdict(r) for r in records])

    def job_payloads_unfinished(self, kind: str, limit: int) -> tuple[int, list[Any]]:
        """How many jobs of ``kind`` are unfinished, and up to ``limit`` of their payloads."""
        with self.read() as conn:
            count = conn.execute(
                select(func.count()).where(jobs.c.kind == kind, jobs.c.finished_at.is_(None))
            ).scalar_one()
            payloads = (
                conn.execute(
                    select(jobs.c.payload)
                    .where(jobs.c.kind == kind, jobs.c.finished_at.is_(None))
                    .order_by(jobs.c.id)
                    .limit(limit)
                )
                .scalars()
                .all()
            )
        return int(count), list(payloads)
