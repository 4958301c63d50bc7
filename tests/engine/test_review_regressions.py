"""Regressions for races and edge cases found in review."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from pydantic import BaseModel

from engine import Engine, RetryPolicy


class Item(BaseModel):
    n: int


def test_a_zero_ttl_key_is_never_shared_by_two_unfinished_jobs(db_url: str) -> None:
    """An enqueue racing an uncommitted enqueue of the same key returns that job's id."""
    engine = Engine(db_url)
    engine.job(payload=Item, idempotency=lambda p: f"k:{p.n}", idempotency_ttl=0, kind="k")(
        lambda ctx, p: None
    )
    engine.store  # the schema exists before the caller's transaction  # noqa: B018
    other = sa.create_engine(db_url)
    results: list[int] = []
    with other.connect() as conn:
        conn.begin()
        first = engine.enqueue("k", {"n": 1}, connection=conn)
        racer = threading.Thread(
            target=lambda: results.append(engine.enqueue("k", {"n": 1})), daemon=True
        )
        racer.start()
        time.sleep(0.5)  # the racer waits for the first transaction
        conn.commit()
    racer.join(timeout=30)
    other.dispose()
    assert results == [first]
    assert engine.store.job_count_by_state() == {"pending": 1}
    engine.close()


def test_database_time_on_sqlite_is_the_local_clock(tmp_path: object) -> None:
    """time_source='database' on SQLite (one machine) claims and runs jobs normally."""
    engine = Engine(f"sqlite:///{tmp_path}/t.db", time_source="database")  # type: ignore[str-bytes-safe]
    engine.job(payload=Item, idempotency=lambda p: f"k:{p.n}", kind="k")(lambda ctx, p: None)
    engine.enqueue("k", {"n": 1})
    assert engine.run_until_idle().succeeded == 1
    engine.close()


def test_a_backoff_cap_beyond_ten_years_is_refused() -> None:
    """A cap whose due dates would overflow the calendar is refused when declared."""
    with pytest.raises(ValueError, match="cap"):
        RetryPolicy(cap=1e12)
