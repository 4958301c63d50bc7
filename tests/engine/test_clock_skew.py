"""Leases on the database's clock: a worker whose clock is wrong cannot steal or lose them."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from engine import Engine, Invariant, OffsetClock, SystemClock

HOUR = 3600.0


class Item(BaseModel):
    n: int


def make(url: str, clock: object, time_source: str) -> Engine:
    engine = Engine(url, clock=clock, time_source=time_source, lease_seconds=30)  # type: ignore[arg-type]
    engine.job(payload=Item, idempotency=Invariant("test"), kind="item")(lambda ctx, p: None)
    return engine


def test_database_time_keeps_skewed_workers_honest(db_url: str, backend: str) -> None:
    """A worker an hour fast cannot steal a live lease, nor one an hour slow lose its own."""
    if backend != "postgresql":
        pytest.skip("database time matters where workers on many hosts share a server")
    holder = make(db_url, OffsetClock(-HOUR), "database")  # an hour slow
    job_id = holder.enqueue("item", {"n": 1})
    batch = holder.claim(holder.now(), 10)
    holder.mark_started(batch, batch.jobs, holder.now())
    lease = holder.get(job_id).lease_expires_at
    assert lease is not None
    assert abs((lease - SystemClock().now()).total_seconds() - 30) < 5, "lease on server time"

    thief = make(db_url, OffsetClock(+HOUR), "database")  # an hour fast
    assert thief.rescue(thief.now()).expired == 0
    assert thief.run_until_idle().claimed == 0
    assert holder.get(job_id).state == "running"

    # Without database time the fast worker's clock says the lease ran out long ago.
    naive = make(db_url, OffsetClock(+HOUR), "local")
    assert naive.rescue(naive.now()).expired == 1, "local time lets a skewed clock steal"
    for engine in (holder, thief, naive):
        engine.close()


def test_database_time_is_the_server_clock(db_url: str, backend: str) -> None:
    """With time_source='database' PostgreSQL time is the server's; SQLite's is the local."""
    engine = make(db_url, OffsetClock(+HOUR), "database")
    offset = (engine.now() - SystemClock().now()).total_seconds()
    assert abs(offset - (0 if backend == "postgresql" else HOUR)) < 5
    assert abs((engine.clock.now() - SystemClock().now()).total_seconds() - HOUR) < 5
    engine.close()


def test_database_time_on_sqlite_is_the_local_clock(tmp_path: object) -> None:
    """time_source='database' on SQLite (one machine) claims and runs jobs normally."""
    engine = Engine(f"sqlite:///{tmp_path}/t.db", time_source="database")  # type: ignore[str-bytes-safe]
    engine.job(payload=Item, idempotency=lambda p: f"k:{p.n}", kind="k")(lambda ctx, p: None)
    engine.enqueue("k", {"n": 1})
    assert engine.run_until_idle().succeeded == 1
    engine.close()


def test_the_database_clock_reads_the_server_once_per_resync_and_never_runs_back() -> None:
    """Between reads it moves with the monotonic clock; a read that lands earlier than the
    time already given out (a slow previous read) does not turn time back."""
    from datetime import UTC, datetime, timedelta

    from engine.clock import DatabaseClock

    mono = [100.0]
    server = [datetime(2026, 1, 1, tzinfo=UTC)]
    reads: list[datetime] = []

    def read() -> datetime:
        reads.append(server[0])
        return server[0]

    clock = DatabaseClock(read, resync=5.0, monotonic=lambda: mono[0])
    first = clock.now()
    assert first == server[0] and len(reads) == 1
    mono[0] += 2.5
    assert clock.now() == first + timedelta(seconds=2.5) and len(reads) == 1
    mono[0] += 2.5  # the resync is due: the server's time is taken as it is
    server[0] = first + timedelta(seconds=4.5)
    assert clock.now() == first + timedelta(seconds=4.5) and len(reads) == 2
    mono[0] += 5.0  # due again, and the server now says less than was already given out
    server[0] = first + timedelta(seconds=4)
    assert clock.now() == first + timedelta(seconds=4.5) and len(reads) == 3
    mono[0] += 1.0
    assert clock.now() == first + timedelta(seconds=5)


def test_the_database_clock_is_never_behind_the_server() -> None:
    """A read takes a round trip; the server's reading lies somewhere inside it. The clock
    must not fall behind the server (a job the server just stamped due would not be due
    here), so the reading counts from when the request left."""
    from datetime import UTC, datetime, timedelta

    from engine.clock import DatabaseClock

    start = datetime(2026, 1, 1, tzinfo=UTC)
    mono = [0.0]

    def server_now() -> datetime:  # the server's true time, on the same time line
        return start + timedelta(seconds=mono[0])

    def read() -> datetime:
        mono[0] += 0.002  # the request travels fast
        reading = server_now()  # the server reads its clock
        mono[0] += 0.018  # the answer comes back slowly
        return reading

    clock = DatabaseClock(read, resync=5.0, monotonic=lambda: mono[0])
    for _ in range(5):
        assert clock.now() >= server_now()
        mono[0] += 1.3
