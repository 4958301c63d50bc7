"""The store's guarantees: compare-and-set transitions and SQLite durability settings."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import text

from engine.store import EventRow, Move, NewJob, Store

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def new_job(key: str | None = "k1") -> NewJob:
    return NewJob(
        kind="k",
        chart="lifecycle",
        state="pending",
        payload='{"a": 1}',
        idempotency_key=key,
        max_attempts=3,
        priority=0,
        queue="default",
        due_at=NOW,
        correlation_id="c",
        trigger="enqueue",
    )


def test_same_transition_applied_twice_is_a_no_op(db_url: str) -> None:
    """A compare-and-set move applies once; replaying it changes nothing and adds no event."""
    store = Store(db_url)
    job_id, _ = store.job_insert_many([new_job()], now=NOW)[0]
    move = Move(
        job_id,
        "pending",
        0,
        None,
        {"state": "cancelled", "updated_at": NOW, "due_at": None},
        EventRow("cancel", "pending", "cancelled", 0, NOW),
    )
    assert store.job_transition_many([move]) == [True]
    assert store.job_transition_many([move]) == [False]
    assert [e.trigger for e in store.job_events(job_id)] == ["enqueue", "cancel"]
    row = store.job_get(job_id)
    assert row is not None and row.version == 1 and row.state == "cancelled"


def test_batch_with_one_stale_move_applies_the_others(db_url: str) -> None:
    """In a batch, a move whose version is stale is refused while the rest commit."""
    store = Store(db_url)
    ids = [store.job_insert_many([new_job(f"k{i}")], now=NOW)[0][0] for i in range(3)]
    moves = [
        Move(
            job_id,
            "pending",
            1 if i == 1 else 0,  # the second one's version is stale
            None,
            {"state": "cancelled", "updated_at": NOW},
            EventRow("cancel", "pending", "cancelled", 0, NOW),
        )
        for i, job_id in enumerate(ids)
    ]
    assert store.job_transition_many(moves) == [True, False, True]
    states = [store.job_get(i).state for i in ids]  # type: ignore[union-attr]
    assert states == ["cancelled", "pending", "cancelled"]
    assert len(store.job_events(ids[1])) == 1


def test_lease_token_fences_a_move(db_url: str) -> None:
    """A move carrying a lease token that no longer holds the job does not apply."""
    store = Store(db_url)
    job_id, _ = store.job_insert_many([new_job()], now=NOW)[0]
    take = Move(
        job_id,
        "pending",
        0,
        None,
        {"state": "running", "lease_token": "new", "updated_at": NOW, "due_at": None},
        EventRow("start", "pending", "running", 1, NOW),
    )
    assert store.job_transition_many([take]) == [True]
    stale = Move(
        job_id,
        "running",
        1,
        "old",
        {"state": "succeeded", "lease_token": None, "updated_at": NOW},
        EventRow("succeed", "running", "succeeded", 1, NOW),
    )
    assert store.job_transition_many([stale]) == [False]
    assert not store.step_record(
        job_id=job_id, lease_token="old", name="s", result=1, attempt=1, at=NOW
    )
    assert store.step_record(
        job_id=job_id, lease_token="new", name="s", result=1, attempt=1, at=NOW
    )


def test_duplicate_key_returns_first_id(db_url: str) -> None:
    """The unique index turns a second insert of (kind, key) into the first id."""
    store = Store(db_url)
    first = store.job_insert_many([new_job()], now=NOW)[0]
    second = store.job_insert_many([new_job()], now=NOW)[0]
    assert first == (first[0], True) and second == (first[0], False)


def test_sqlite_runs_in_wal_with_full_sync(db_url: str, sqlite_only: None) -> None:
    """The embedded database uses WAL and synchronous=FULL so commits survive a crash."""
    store = Store(db_url)
    with store.read() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
