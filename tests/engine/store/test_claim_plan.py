"""The claim walks its index: its cost does not grow with the finished jobs in the table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from engine.store import JobRow, Move, Store
from engine.store.rows import EventRow
from engine.store.schema import jobs

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def fill(store: Store, finished: int, due: int, analyze: bool = True) -> None:
    base = {
        "kind": "noop",
        "chart": "lifecycle",
        "payload": {},
        "max_attempts": 3,
        "priority": 0,
        "queue": "default",
        "version": 0,
        "correlation_id": "c",
        "created_at": NOW,
        "updated_at": NOW,
    }
    with store.write() as conn:
        done = {**base, "state": "succeeded", "attempt": 1, "finished_at": NOW}
        if finished:
            conn.execute(sa.insert(jobs), [done] * finished)
        conn.execute(
            sa.insert(jobs),
            [
                {**base, "state": "pending", "attempt": 0, "due_at": NOW - timedelta(seconds=i)}
                for i in range(due)
            ],
        )
        if analyze and store.dialect == "postgresql":
            conn.execute(sa.text("ANALYZE jobs"))


def claim_in_order(store: Store, limit: int) -> list[JobRow]:
    """Claim ``limit`` jobs for real; the rows as they were selected."""

    def plan(row: JobRow, _tx_time: datetime | None) -> Move:
        event = EventRow("start", row.state, "running", 1, NOW, "w", None)
        values = {"state": "running", "due_at": None, "lease_token": "t"}
        return Move(row.id, row.state, row.version, row.lease_token, values, event)

    pairs = store.job_claim_due(
        now=NOW, limit=limit, kinds=["noop"], states=["pending", "retry_wait"], plan=plan
    )
    return [row for row, _ in pairs]


def test_the_claim_query_uses_the_claim_index(db_url: str) -> None:
    """The claim select never scans the table: SQLite walks ix_jobs_claim; PostgreSQL picks
    by its statistics between that and the state index (both skip finished jobs)."""
    store = Store(db_url)
    fill(store, finished=20_000, due=50)
    plan = store.claim_plan(NOW, 10, ["noop"], ["pending", "retry_wait"])
    claimed = claim_in_order(store, 10)
    store.close()
    if store.dialect == "sqlite":
        assert "ix_jobs_claim" in plan, plan
    else:
        assert "Seq Scan" not in plan and ("ix_jobs_claim" in plan or "ix_jobs_state" in plan)
    assert len(claimed) == 10 and all(row.state == "pending" for row in claimed)
    assert [row.due_at for row in claimed] == sorted(row.due_at for row in claimed)


def test_a_burst_of_jobs_not_yet_analyzed_is_claimed_by_the_index(db_url: str) -> None:
    """5,000 jobs enqueued at once and no statistics yet (autovacuum has not run): the
    claim still walks ix_jobs_claim instead of sorting every waiting job."""
    store = Store(db_url)
    fill(store, finished=0, due=5000, analyze=False)
    plan = store.claim_plan(NOW, 8, ["noop"], ["pending", "retry_wait"])
    claimed = claim_in_order(store, 8)
    store.close()
    assert "ix_jobs_claim" in plan, plan
    assert "Sort" not in plan and "Seq Scan" not in plan, plan
    assert [row.due_at for row in claimed] == sorted(row.due_at for row in claimed)
    assert claimed[0].due_at == NOW - timedelta(seconds=4999)
