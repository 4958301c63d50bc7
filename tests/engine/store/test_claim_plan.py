"""The claim walks its index: its cost does not grow with the finished jobs in the table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from engine.store import Store
from engine.store.schema import jobs

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def fill(store: Store, finished: int, due: int) -> None:
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
        conn.execute(sa.insert(jobs), [done] * finished)
        conn.execute(
            sa.insert(jobs),
            [
                {**base, "state": "pending", "attempt": 0, "due_at": NOW - timedelta(seconds=i)}
                for i in range(due)
            ],
        )
        if store.dialect == "postgresql":
            conn.execute(sa.text("ANALYZE jobs"))


def test_the_claim_query_uses_the_claim_index(db_url: str) -> None:
    """The claim select never scans the table: SQLite walks ix_jobs_claim; PostgreSQL picks
    by its statistics between that and the state index (both skip finished jobs)."""
    store = Store(db_url)
    fill(store, finished=20_000, due=50)
    query = store.claim_query(NOW, 10, ["noop"], ["pending", "retry_wait"])
    with store.read() as conn:
        sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
        explain = "EXPLAIN QUERY PLAN " if store.dialect == "sqlite" else "EXPLAIN "
        plan = " ".join(str(row) for row in conn.exec_driver_sql(explain + sql))
        claimed = conn.execute(query).all()
    store.close()
    if store.dialect == "sqlite":
        assert "ix_jobs_claim" in plan, plan
    else:
        assert "Seq Scan" not in plan and ("ix_jobs_claim" in plan or "ix_jobs_state" in plan)
    assert len(claimed) == 10 and all(row.state == "pending" for row in claimed)
    assert [row.due_at for row in claimed] == sorted(row.due_at for row in claimed)
