"""Lists and bulk scans read a filter partition by partition (per state, or per state and
kind) and merge the pages; property: whatever the filter and cursor, the result is exactly
the first page of one plain select over the whole table, in id order, on both backends."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from sqlalchemy import select

from engine import Engine, FrozenClock, JobContext, Permanent
from engine.store import bulk as sql
from engine.store.bulk import JobFilter, where
from engine.store.reads import job_row
from engine.store.schema import jobs

KINDS = ("ok", "bad", "idle")
STATES = ("pending", "succeeded", "quarantined", "cancelled")


class N(BaseModel):
    n: int


@pytest.fixture
def filled(db_url: str, clock: FrozenClock) -> Iterator[Engine]:
    """60 jobs: ``ok`` succeeded, ``bad`` quarantined, ``idle`` left pending, some
    cancelled, over two queues and two hours."""
    app = Engine(db_url, clock=clock, seed=7)
    app.job(payload=N, idempotency=lambda p: f"ok:{p.n}", kind="ok")(lambda c, p: None)

    def bad(ctx: JobContext, p: N) -> None:
        raise Permanent("no")

    app.job(payload=N, idempotency=lambda p: f"bad:{p.n}", kind="bad")(bad)
    app.job(payload=N, idempotency=lambda p: f"idle:{p.n}", kind="idle")(lambda c, p: None)
    for n in range(60):
        kind = KINDS[n % 3]
        queue = "slow" if n % 5 == 0 else "default"
        job_id = app.enqueue(kind, {"n": n}, queue=queue, delay=3600 if kind == "idle" else 0)
        if n % 7 == 0:
            app.cancel(job_id)
        if n == 30:
            clock.advance(timedelta(hours=1))
    app.run_until_idle()
    yield app
    app.close()


def plain(app: Engine, f: JobFilter, bounds: list, limit: int, newest_first: bool) -> list[int]:
    order = jobs.c.id.desc() if newest_first else jobs.c.id
    stmt = select(jobs).where(*where(f), *bounds).order_by(order).limit(limit)
    with app.store.read() as conn:
        return [job_row(row).id for row in conn.execute(stmt)]


START = FrozenClock().now()  # the fixture's clock starts here: jobs 0-30, then an hour on
filters = st.builds(
    JobFilter,
    states=st.lists(st.sampled_from(STATES), max_size=3, unique=True).map(tuple),
    kinds=st.lists(st.sampled_from(KINDS), max_size=2, unique=True).map(tuple),
    queues=st.lists(st.sampled_from(("slow", "default")), max_size=1).map(tuple),
    updated_before=st.sampled_from(
        [None, START, START + timedelta(minutes=30), START + timedelta(hours=1, seconds=1)]
    ),
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(f=filters, limit=st.integers(1, 25), cursor=st.integers(0, 70))
def test_a_partitioned_page_is_the_plain_selects_page(
    filled: Engine, f: JobFilter, limit: int, cursor: int
) -> None:
    newest = sql.job_page(filled.store, f, limit=limit, below=cursor or None)
    bounds = [jobs.c.id < cursor] if cursor else []
    assert [r.id for r in newest] == plain(filled, f, bounds, limit, True)
    oldest = sql.job_scan(filled.store, f, limit=limit, above=cursor, upto=55)
    bounds = [jobs.c.id > cursor, jobs.c.id <= 55]
    assert [r.id for r in oldest] == plain(filled, f, bounds, limit, False)


def test_a_capped_count_stops_at_the_cap(filled: Engine) -> None:
    f = JobFilter(kinds=("ok", "bad"))
    exact = sql.job_count_states(filled.store, f)
    assert sum(exact.values()) == 40
    capped = sql.job_count_states(filled.store, f, cap=9)
    assert sum(capped.values()) == 10  # the cap + 1: "more than 9"
    assert sql.job_states_present(filled.store) == {
        "succeeded",
        "quarantined",
        "cancelled",
        "pending",
    }


windowed_filters = st.builds(
    JobFilter,
    states=st.lists(st.sampled_from(STATES), max_size=2, unique=True).map(tuple),
    queues=st.lists(st.sampled_from(("slow", "default")), min_size=1, max_size=1).map(tuple),
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(f=windowed_filters, limit=st.integers(1, 10), window=st.integers(1, 30))
def test_windowed_pages_together_list_every_match_once(
    filled: Engine, f: JobFilter, limit: int, window: int
) -> None:
    """A filter no index holds searches a window of ids per page; following the cursors
    lists exactly the plain select's jobs, newest first, each once."""
    from engine import bulk

    seen: list[int] = []
    after = None
    for _ in range(200):
        page = bulk.page(filled, f, after=after, limit=limit, window=window)
        assert len(page.rows) <= limit
        seen += [row.id for row in page.rows]
        if page.next_after is None:
            break
        after = page.next_after
    assert seen == plain(filled, f, [], 1000, True)


def test_state_figures_agree_whether_a_state_is_read_whole_or_kind_by_kind(
    filled: Engine,
) -> None:
    """The overview reads a small state whole and a crowded one kind by kind: both ways
    give the same counts (up to the cap) and the same oldest job per (kind, state)."""
    from engine.store import dashboard

    pairs = [(k, s, s in ("pending", "running")) for k in KINDS for s in STATES]
    whole = dashboard.state_figures(filled.store, pairs, cap=1000)
    crowded = dashboard.state_figures(filled.store, pairs, cap=1)
    assert sum(f.jobs for f in whole) == 60
    for a, b in zip(whole, crowded, strict=True):
        assert (a.kind, a.state) == (b.kind, b.state)
        assert b.jobs == min(a.jobs, 1) and b.capped == (a.jobs > 1) and not a.capped
        assert a.oldest == b.oldest
        assert (a.oldest is not None) == (a.jobs > 0 and a.state in ("pending", "running"))
