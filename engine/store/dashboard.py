"""The dashboard's reads, each bounded whatever the table holds: counts capped by a LIMIT
over an index range, the oldest job per (state, kind) by one index seek, transitions
counted over the latest events only, and searches by id, key or correlation id through an
index. A page therefore costs about the same at a thousand jobs and at a million.

Plain functions over a ``Database`` (the ``Store``), as ``engine.store.bulk``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from engine.store.bulk import job_kinds_present
from engine.store.database import Database
from engine.store.reads import job_row
from engine.store.rows import JobRow, parse_time
from engine.store.schema import job_events, job_kinds, jobs


@dataclass(frozen=True)
class StateFigure:
    """Jobs of ``kind`` in ``state``: how many (at most the cap: ``capped`` says more
    exist), and the oldest last change among them (None: no job)."""

    kind: str
    state: str
    jobs: int
    capped: bool
    oldest: datetime | None


@dataclass(frozen=True)
class EdgeCount:
    """Transitions of ``kind``'s jobs along one edge among the events counted."""

    kind: str
    trigger: str
    source: str
    dest: str
    taken: int


@dataclass(frozen=True)
class EdgeCounts:
    """The transitions since ``since``, counted over at most the latest ``cap`` events;
    ``truncated``: the window held more events than that, so the counts cover its latest
    part only."""

    edges: list[EdgeCount]
    counted: int
    truncated: bool


def state_figures(
    db: Database, pairs: Iterable[tuple[str, str, bool]], *, cap: int, oldest_of: int = 1000
) -> list[StateFigure]:
    """For each (kind, state, waits): its jobs, counted up to ``cap`` + 1, and for states
    where jobs wait (``waits``) the oldest last change among them; all over index ranges
    of ``ix_jobs_state``, never the table.

    A state is read whole, for all its kinds at once, while it holds at most ``cap`` jobs
    (two statements: the counts, and the oldest per kind); a state past that (a million
    succeeded, a big backlog) is read kind by kind, each count capped and each oldest
    taken among the ``oldest_of`` earliest jobs of the kind in it. So the statements grow
    with the states, not with states times kinds, except for the crowded ones."""
    wanted: dict[str, list[tuple[str, bool]]] = {}
    for kind, state, waits in pairs:
        wanted.setdefault(state, []).append((kind, waits))
    figures = []
    with db.read() as conn:
        for state, members in wanted.items():
            kinds = [kind for kind, _ in members]
            in_state = (jobs.c.state == state, jobs.c.kind.in_(kinds))
            some = select(jobs.c.kind).where(*in_state).limit(cap + 1).subquery()
            counts = {
                kind: int(n)
                for kind, n in conn.execute(select(some.c.kind, func.count()).group_by(some.c.kind))
            }
            if sum(counts.values()) <= cap:  # the whole state is small: read it at once
                oldest: dict[str, datetime] = {}
                if any(waits and counts.get(kind) for kind, waits in members):
                    stmt = (
                        select(jobs.c.kind, func.min(jobs.c.updated_at))
                        .where(*in_state)
                        .group_by(jobs.c.kind)
                    )
                    oldest = {k: parse_time(at) for k, at in conn.execute(stmt) if at is not None}
                figures += [
                    StateFigure(
                        kind, state, counts.get(kind, 0), False, oldest.get(kind) if waits else None
                    )
                    for kind, waits in members
                ]
                continue
            for kind, waits in members:  # a crowded state: kind by kind, each bounded
                figures.append(_one_figure(conn, kind, state, waits, cap, oldest_of))
    return figures


def _one_figure(
    conn: Any, kind: str, state: str, waits: bool, cap: int, oldest_of: int
) -> StateFigure:
    match = (jobs.c.state == state, jobs.c.kind == kind)
    some = select(jobs.c.id).where(*match).limit(cap + 1).subquery()
    count = int(conn.execute(select(func.count()).select_from(some)).scalar_one())
    oldest = None
    if count and waits:
        first = select(jobs.c.updated_at).where(*match).order_by(jobs.c.id).limit(oldest_of)
        at = conn.execute(select(func.min(first.subquery().c.updated_at))).scalar()
        oldest = parse_time(at) if at is not None else None
    return StateFigure(kind, state, min(count, cap), count > cap, oldest)


def edge_counts(db: Database, since: datetime, *, cap: int) -> EdgeCounts:
    """Transitions per (kind, trigger, from, to) at or after ``since`` among the latest
    ``cap`` events (event ids grow with time, so the latest are the highest ids)."""
    with db.read() as conn:
        top = conn.execute(select(func.max(job_events.c.id))).scalar()
        if top is None:
            return EdgeCounts([], 0, False)
        floor = int(top) - cap
        recent = (
            select(
                job_events.c.job_id,
                job_events.c.trigger,
                job_events.c.from_state,
                job_events.c.to_state,
            )
            .where(
                job_events.c.id > floor,
                job_events.c.at >= since,
                job_events.c.from_state.is_not(None),
            )
            .subquery()
        )
        stmt = (
            select(
                jobs.c.kind, recent.c.trigger, recent.c.from_state, recent.c.to_state, func.count()
            )
            .select_from(recent.join(jobs, jobs.c.id == recent.c.job_id))
            .group_by(jobs.c.kind, recent.c.trigger, recent.c.from_state, recent.c.to_state)
        )
        edges = [EdgeCount(r[0], r[1], r[2], r[3], int(r[4])) for r in conn.execute(stmt)]
        truncated = False
        if floor > 0:  # the latest event not counted (retention may have removed ``floor``)
            edge = conn.execute(
                select(job_events.c.at)
                .where(job_events.c.id <= floor)
                .order_by(job_events.c.id.desc())
                .limit(1)
            ).scalar()
            truncated = edge is not None and parse_time(edge) >= since
    return EdgeCounts(edges, sum(e.taken for e in edges), truncated)


def job_search(
    db: Database, text: str, *, kinds: Sequence[str], limit: int, recent: int
) -> list[JobRow]:
    """Jobs whose id, idempotency key (of one of ``kinds``: ``ix_jobs_kind_key``) or
    correlation id is ``text``, newest first. Correlation ids have no index (it would
    slow every enqueue), so only the latest ``recent`` jobs are searched for one."""
    found: dict[int, JobRow] = {}
    with db.read() as conn:
        top = conn.execute(select(func.max(jobs.c.id))).scalar() or 0
        conditions = [(jobs.c.id > int(top) - recent) & (jobs.c.correlation_id == text)]
        if kinds:
            conditions.append(jobs.c.kind.in_(list(kinds)) & (jobs.c.idempotency_key == text))
        if text.isascii() and text.isdigit() and len(text) < 19:
            row = conn.execute(select(jobs).where(jobs.c.id == int(text))).first()
            if row is not None:
                found[int(row.id)] = job_row(row)
        for condition in conditions:  # one index each (an OR would scan the table)
            stmt = select(jobs).where(condition).order_by(jobs.c.id.desc()).limit(limit)
            for row in conn.execute(stmt):
                found.setdefault(int(row.id), job_row(row))
    return sorted(found.values(), key=lambda r: r.id, reverse=True)[:limit]


def known_kinds(db: Database) -> list[str]:
    """Every kind some app recorded (``job_kinds``) or some job has (a skip scan)."""
    with db.read() as conn:
        kinds = {row[0] for row in conn.execute(select(job_kinds.c.kind))}
    return sorted(kinds | job_kinds_present(db))
