"""Global limits in SQL: how many jobs of a scope hold a lease, which rate slots were used
within their period, and taking slots for new starts.

Read inside the claim's write transaction. On PostgreSQL the claim first takes one advisory
lock per limited scope (sorted, so claims cannot deadlock), so two workers never both count
the same free room: the second counts after the first has committed. SQLite's write
transactions are serialized already.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, func, select, text

from engine.store.keys import dialect_insert
from engine.store.schema import jobs, rate_slots


@dataclass(frozen=True)
class ScopeLimit:
    """One limit as the store sees it: the jobs column it counts by, and its numbers."""

    by: str  # "kind" or "queue": the jobs column that names the scope
    name: str
    concurrency: int | None = None
    starts: int | None = None  # a rate: at most ``starts`` per ``period``
    period: timedelta = timedelta(seconds=1)

    @property
    def key(self) -> str:
        return f"{self.by}:{self.name}"


@dataclass
class Usage:
    """What a scope uses now: jobs holding a lease, rate slots used within the period."""

    running: int = 0
    busy: set[int] = field(default_factory=set)
    free_at: datetime | None = None  # when the oldest busy rate slot frees

    def room(self, limit: ScopeLimit) -> int | None:
        """Starts the scope may take now (None: unlimited)."""
        left: int | None = None
        if limit.concurrency is not None:
            left = limit.concurrency - self.running
        if limit.starts is not None:
            free = limit.starts - len(self.busy)
            left = free if left is None else min(left, free)
        return None if left is None else max(left, 0)


def lock(conn: Connection, dialect: str, limits: Iterable[ScopeLimit]) -> None:
    """PostgreSQL: serialize the claims of these scopes until the transaction ends."""
    if dialect != "postgresql":
        return
    for key in sorted({limit.key for limit in limits}):
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"limit\x1f{key}"},
        )


def usage(conn: Connection, limits: Sequence[ScopeLimit], now: datetime) -> dict[str, Usage]:
    """Each scope's usage at ``now`` (running jobs are the ones holding a live lease)."""
    found = {limit.key: Usage() for limit in limits}
    for by in ("kind", "queue"):
        names = [x.name for x in limits if x.by == by and x.concurrency is not None]
        if not names:
            continue
        column = jobs.c[by]
        counted = conn.execute(
            select(column, func.count())
            .where(jobs.c.lease_expires_at.is_not(None), column.in_(names))
            .group_by(column)
        )
        for name, running in counted:
            found[f"{by}:{name}"].running = int(running)
    rated = {x.key: x for x in limits if x.starts is not None}
    if rated:
        since = now - max(x.period for x in rated.values())
        rows = conn.execute(
            select(rate_slots.c.scope, rate_slots.c.slot, rate_slots.c.used_at).where(
                rate_slots.c.scope.in_(list(rated)), rate_slots.c.used_at > since
            )
        )
        for key, slot, used_at in rows:
            limit = rated[key]
            if limit.starts is None or slot >= limit.starts or used_at <= now - limit.period:
                continue
            scope = found[key]
            scope.busy.add(int(slot))
            frees = used_at + limit.period
            if scope.free_at is None or frees < scope.free_at:
                scope.free_at = frees
    return found


def take_slots(
    conn: Connection,
    dialect: str,
    limits: Sequence[ScopeLimit],
    used: Mapping[str, Usage],
    starts: Mapping[str, int],
    now: datetime,
) -> None:
    """Record ``starts[key]`` new starts of each rated scope in its free slots."""
    rows = []
    for limit in limits:
        n = starts.get(limit.key, 0)
        if limit.starts is None or n <= 0:
            continue
        busy = used[limit.key].busy
        free = [slot for slot in range(limit.starts) if slot not in busy][:n]
        rows += [{"scope": limit.key, "slot": slot, "used_at": now} for slot in free]
    if rows:
        stmt = dialect_insert(dialect, rate_slots)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["scope", "slot"], set_={"used_at": stmt.excluded.used_at}
            ),
            rows,
        )
