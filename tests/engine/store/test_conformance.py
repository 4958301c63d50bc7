"""The Store's contract, one suite for every backend (run on SQLite and PostgreSQL via db_url).

Each test pins one rule of one public Store method as the engine relies on it, and checks
what the database holds afterwards, not only what the call returned. Inputs are built from
the typed rows (NewJob, EventRow, Move) directly; no engine, no chart: state names here are
plain strings, as the store sees them.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from engine.store import EventRecord, EventRow, JobRow, KeyRow, Move, NewJob, Store
from engine.store.schema import idempotency_keys, job_events, job_steps, jobs

NOW = datetime(2026, 1, 1, tzinfo=UTC)
KIND = "email"
DAY = timedelta(days=1)
LEASE_END = NOW + timedelta(minutes=5)  # the lease end of a claim, unless given
FINAL = ("succeeded", "failed", "cancelled")  # what these tests prune

Plan = Callable[[JobRow, datetime | None], Move | None]


# -- helpers ---------------------------------------------------------------------------------


def later(seconds: float) -> datetime:
    """``NOW`` shifted by ``seconds`` (negative: earlier)."""
    return NOW + timedelta(seconds=seconds)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A store on a fresh database."""
    opened = Store(db_url)
    yield opened
    opened.close()


@dataclasses.dataclass(frozen=True)
class Draft:
    """A job to insert and the time of its insert (the store's ``now``)."""

    job: NewJob
    at: datetime = NOW


def new_job(
    key: str | None = None,
    *,
    kind: str = KIND,
    state: str = "pending",
    priority: int = 0,
    queue: str = "default",
    due_at: datetime = NOW,
    created_at: datetime = NOW,
    key_expires_at: datetime | None = None,
    payload: dict[str, Any] | None = None,
) -> Draft:
    job = NewJob(
        kind=kind,
        chart="lifecycle",
        state=state,
        payload=json.dumps({"to": "a@example.com"} if payload is None else payload),
        idempotency_key=key,
        max_attempts=3,
        priority=priority,
        queue=queue,
        due_at=due_at,
        correlation_id="corr-1",
        trigger="enqueue",
        key_ttl=(key_expires_at or created_at) - created_at,
    )
    return Draft(job, at=created_at)


def insert_drafts(
    store: Store, drafts: list[Draft], connection: Any = None
) -> list[tuple[int, bool]]:
    """Insert ``drafts`` (all of one insert time) in one call."""
    assert len({draft.at for draft in drafts}) == 1
    jobs = [draft.job for draft in drafts]
    return store.job_insert_many(jobs, now=drafts[0].at, connection=connection)


def insert(store: Store, key: str | None = None, **fields: Any) -> int:
    """Insert one new job (see ``new_job``) and return its id."""
    [(job_id, inserted)] = insert_drafts(store, [new_job(key, **fields)])
    assert inserted
    return job_id


def get(store: Store, job_id: int) -> JobRow:
    row = store.job_get(job_id)
    assert row is not None, f"job {job_id} is gone"
    return row


def move(
    row: JobRow,
    to: str,
    *,
    trigger: str = "go",
    at: datetime = NOW,
    unless_cancelled: bool = False,
    **values: Any,
) -> Move:
    """A compare-and-set from ``row`` as read (state, version, lease token) to state ``to``."""
    return Move(
        row.id,
        row.state,
        row.version,
        row.lease_token,
        {"state": to, "updated_at": at, **values},
        EventRow(trigger, row.state, to, row.attempt, at),
        unless_cancelled=unless_cancelled,
    )


def start(row: JobRow, token: str = "t1", expires: datetime = LEASE_END) -> Move:
    """The claim of ``row``: running under ``token`` until ``expires``."""
    return move(
        row,
        "running",
        trigger="start",
        attempt=row.attempt + 1,
        due_at=None,
        lease_token=token,
        lease_expires_at=expires,
        started_at=None,
    )


def finish(row: JobRow, to: str = "succeeded", *, at: datetime = NOW, result: Any = None) -> Move:
    """The end of ``row``: final state ``to`` at ``at``, lease released."""
    return move(
        row,
        to,
        trigger="finish",
        at=at,
        due_at=None,
        lease_token=None,
        lease_expires_at=None,
        finished_at=at,
        result=result,
    )


def apply(store: Store, *moves: Move) -> None:
    """Apply moves that must apply (test set-up)."""
    assert store.job_transition_many(moves) == [True] * len(moves)


def held(store: Store, token: str = "t1", expires: datetime = LEASE_END, **fields: Any) -> JobRow:
    """A new job claimed under ``token``; returns its row as read after the claim."""
    job_id = insert(store, **fields)
    apply(store, start(get(store, job_id), token, expires))
    return get(store, job_id)


def finished(
    store: Store,
    key: str | None = None,
    *,
    to: str = "succeeded",
    at: datetime = NOW,
    **fields: Any,
) -> int:
    """A new job run to final state ``to`` at ``at``; returns its id."""
    row = held(store, key=key, **fields)
    apply(store, finish(row, to, at=at, result={"sent": row.id}))
    return row.id


def triggers(store: Store, job_id: int) -> list[str]:
    """The triggers of ``job_id``'s history, oldest first."""
    return [event.trigger for event in store.job_events(job_id)]


def count(store: Store, table: sa.Table, **where: Any) -> int:
    """Rows of ``table`` matching ``column=value`` filters, read straight from the database."""
    stmt = sa.select(sa.func.count()).select_from(table)
    for column, value in where.items():
        stmt = stmt.where(table.c[column] == value)
    with store.read() as conn:
        return int(conn.execute(stmt).scalar_one())


def starter(token: str = "t1", seen: list[JobRow] | None = None) -> Plan:
    """A claim plan that starts every row it is given (and records them in ``seen``)."""

    def plan(row: JobRow, tx_time: datetime | None) -> Move:
        if seen is not None:
            seen.append(row)
        return start(row, token)

    return plan


def releaser(seen: list[JobRow] | None = None) -> Plan:
    """A rescue plan that puts every expired row back to pending (and records them)."""

    def plan(row: JobRow, tx_time: datetime | None) -> Move:
        if seen is not None:
            seen.append(row)
        return move(
            row, "pending", trigger="expire", due_at=NOW, lease_token=None, lease_expires_at=None
        )

    return plan


def claim(store: Store, plan: Plan | None = None, **options: Any) -> list[int]:
    """Claim with ``job_claim_due`` (defaults: now, 10 rows, KIND, pending); the ids claimed."""
    arguments: dict[str, Any] = {"now": NOW, "limit": 10, "kinds": [KIND], "states": ["pending"]}
    arguments.update(options)
    pairs = store.job_claim_due(plan=plan or starter(), **arguments)
    return [row.id for row, _ in pairs]


def is_aware_utc(value: datetime | None) -> bool:
    return value is not None and value.utcoffset() == timedelta(0)


# -- job_insert_many -------------------------------------------------------------------------


def test_insert_many_returns_a_new_id_per_job_in_order(store: Store) -> None:
    """Each job gets its own id, returned in input order with ``inserted=True``, and its row
    holds the given columns with attempt 0, version 0, no lease and updated_at = created_at."""
    batch = [new_job(payload={"n": n}, priority=n, queue=f"q{n}") for n in range(3)]
    results = insert_drafts(store, batch)

    assert [inserted for _, inserted in results] == [True, True, True]
    assert len({job_id for job_id, _ in results}) == 3
    for (job_id, _), draft in zip(results, batch, strict=True):
        row, job = get(store, job_id), draft.job
        assert (row.kind, row.chart, row.state, row.payload) == (
            job.kind,
            job.chart,
            job.state,
            json.loads(job.payload),
        )
        assert (row.priority, row.queue, row.due_at, row.max_attempts) == (
            job.priority,
            job.queue,
            job.due_at,
            job.max_attempts,
        )
        assert (row.attempt, row.version, row.lease_token, row.lease_expires_at) == (
            0,
            0,
            None,
            None,
        )
        assert row.created_at == row.updated_at == NOW and row.finished_at is None
    assert count(store, jobs) == 3


def test_insert_writes_the_creation_event(store: Store) -> None:
    """An inserted job's history is exactly its creation event, as given."""
    draft = new_job()
    job = Draft(draft.job._replace(worker="api-1", detail={"by": "api"}), at=draft.at)
    [(job_id, _)] = insert_drafts(store, [job])

    assert store.job_events(job_id) == [
        EventRecord("enqueue", None, "pending", 0, NOW, "api-1", {"by": "api"})
    ]


def test_a_job_inserted_alone_is_stored_as_in_a_batch(store: Store) -> None:
    """A lone job (every ``enqueue()``: on PostgreSQL a statement of its own, from plain
    parameters instead of arrays), keyed or not, is stored as the same job in a batch of
    two: each column as given, the rest alike, and its creation event; on PostgreSQL
    stamped by the database's clock."""
    now = None if store.dialect == "postgresql" else NOW
    job = new_job().job._replace(
        due_at=None,
        delay=timedelta(seconds=30),
        worker="api-1",
        detail={"by": "api", "n": 1},
        chart_version="v2",
        trace_context="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        priority=-3,
        queue="mail",
        correlation_id="corr-7",
    )
    [(alone, _)] = store.job_insert_many([job], now=now)
    [(keyed, _)] = store.job_insert_many([job._replace(idempotency_key="k-1")], now=now)
    [(first, _), (second, _)] = store.job_insert_many([job, job], now=now)

    given = {
        "kind": KIND,
        "chart": "lifecycle",
        "state": "pending",
        "payload": {"to": "a@example.com"},
        "max_attempts": 3,
        "priority": -3,
        "queue": "mail",
        "correlation_id": "corr-7",
        "chart_version": "v2",
        "trace_context": job.trace_context,
        "attempt": 0,
        "version": 0,
    }
    stamped = ("id", "created_at", "updated_at", "due_at", "idempotency_key")
    others = []
    for job_id, key in ((alone, None), (keyed, "k-1"), (first, None), (second, None)):
        row = get(store, job_id)
        assert {name: getattr(row, name) for name in given} == given
        assert row.idempotency_key == key
        assert row.due_at is not None and row.due_at - row.created_at == timedelta(seconds=30)
        assert row.updated_at == row.created_at
        assert store.job_events(job_id) == [
            EventRecord("enqueue", None, "pending", 0, row.created_at, "api-1", job.detail)
        ]
        others.append({k: v for k, v in row._asdict().items() if k not in stamped})
    assert others[0] == others[1] == others[2] == others[3]


def test_insert_of_a_held_key_returns_the_holder_and_writes_nothing(store: Store) -> None:
    """A second job with a live (kind, key) is not stored: the holder's id comes back with
    ``inserted=False``, and no row, event or key is added."""
    holder = insert(store, "order-1")
    job = new_job("order-1", payload={"other": True})
    assert insert_drafts(store, [job]) == [(holder, False)]

    assert count(store, jobs) == 1 and count(store, job_events) == 1
    assert count(store, idempotency_keys) == 1
    assert get(store, holder).payload == {"to": "a@example.com"}


def test_insert_many_dedupes_within_one_batch(store: Store) -> None:
    """Two jobs of one (kind, key) in a batch make one job; the second gets its id."""
    batch = [new_job("order-1"), new_job("order-1"), new_job("order-2")]
    results = insert_drafts(store, batch)

    assert results[1] == (results[0][0], False)
    assert results[0][1] and results[2][1] and results[2][0] != results[0][0]
    assert count(store, jobs) == 2 and count(store, job_events) == 2


def test_a_key_is_scoped_to_its_kind(store: Store) -> None:
    """The same key under two kinds names two jobs."""
    first = insert(store, "order-1", kind="email")
    second = insert(store, "order-1", kind="sms")

    assert first != second
    assert get(store, first).kind == "email" and get(store, second).kind == "sms"


def test_insert_many_is_all_or_nothing(store: Store) -> None:
    """A batch whose last job cannot be stored stores none of them: no job, event or key."""
    good = new_job("order-1")
    draft = new_job()
    bad = Draft(draft.job._replace(payload=None), at=draft.at)  # NOT NULL
    with pytest.raises((ValueError, sa.exc.StatementError)):
        insert_drafts(store, [good, bad])

    assert count(store, jobs) == 0 and count(store, job_events) == 0
    assert count(store, idempotency_keys) == 0
    assert insert_drafts(store, [good])[0][1], "the key was not taken"


def test_a_keyed_insert_the_server_refuses_keeps_nothing_and_the_next_one_works(
    store: Store,
) -> None:
    """PostgreSQL's keyed lone-job path runs its own transaction on the driver: a refused
    statement rolls all of it back (no job, event or key) and leaves its pooled
    connection fit for the next insert."""
    if store.dialect != "postgresql":
        pytest.skip("SQLite stores any integer: no value is refused by a cast")
    for _ in range(3):  # more tries than the pool's idle connections in use here
        with pytest.raises(sa.exc.DBAPIError, match="out of range"):
            insert(store, "k-1", priority=2**40)
    assert (count(store, jobs), count(store, job_events), count(store, idempotency_keys)) == (
        0,
        0,
        0,
    )
    job_id = insert(store, "k-1")
    assert get(store, job_id).idempotency_key == "k-1"


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
def test_insert_with_a_connection_joins_the_callers_transaction(store: Store, commit: bool) -> None:
    """With ``connection`` the job, its event and its key exist if and only if the caller
    commits."""
    job = new_job("order-1")
    with store.db.connect() as conn:
        conn.begin()
        [(job_id, inserted)] = insert_drafts(store, [job], connection=conn)
        assert inserted
        if commit:
            conn.commit()
        else:
            conn.rollback()

    stored = 1 if commit else 0
    assert count(store, jobs, id=job_id) == stored
    assert count(store, job_events, job_id=job_id) == stored
    assert count(store, idempotency_keys) == stored


def test_an_expired_key_of_a_finished_job_goes_to_a_new_job(store: Store) -> None:
    """Once its TTL has passed and its job is final, a key is taken by the next insert."""
    old = finished(store, "order-1", key_expires_at=later(60))
    new = insert(store, "order-1", created_at=later(61), key_expires_at=later(120))

    assert new != old
    key = store.key_get(KIND, "order-1")
    assert key is not None and (key.job_id, key.expires_at) == (new, later(120))
    assert count(store, jobs) == 2


def test_an_expired_key_of_an_unfinished_job_still_dedupes(store: Store) -> None:
    """A key past its TTL stays with its job while that job is not final."""
    holder = insert(store, "order-1", key_expires_at=NOW)  # zero TTL
    job = new_job("order-1", created_at=later(3600))

    assert insert_drafts(store, [job]) == [(holder, False)]
    assert count(store, jobs) == 1


def test_a_key_of_a_finished_job_dedupes_until_it_expires(store: Store) -> None:
    """A final job keeps its key until the key's TTL has passed."""
    holder = finished(store, "order-1", key_expires_at=later(60))
    job = new_job("order-1", created_at=later(59))

    assert insert_drafts(store, [job]) == [(holder, False)]
    assert count(store, jobs) == 1


# -- job_transition_many ---------------------------------------------------------------------


def test_a_move_applies_once(store: Store) -> None:
    """A move writes its values, bumps the version and appends its event; replaying the same
    move is refused and changes nothing."""
    row = get(store, insert(store))
    claim_move = start(row, "t1")
    assert store.job_transition_many([claim_move]) == [True]
    after = get(store, row.id)
    assert (after.state, after.version, after.lease_token, after.attempt) == ("running", 1, "t1", 1)
    assert (after.due_at, after.lease_expires_at) == (None, LEASE_END)

    assert store.job_transition_many([claim_move]) == [False]
    assert get(store, row.id) == after
    assert triggers(store, row.id) == ["enqueue", "start"]


def test_a_move_with_a_stale_version_is_refused(store: Store) -> None:
    """A move planned from a row that has changed since (its version moved on) is refused
    and writes no event."""
    row = held(store)
    apply(store, move(row, "running", trigger="heartbeat"))  # version moves on
    current = get(store, row.id)

    assert store.job_transition_many([finish(row)]) == [False]
    assert get(store, row.id) == current and current.state == "running"
    assert triggers(store, row.id) == ["enqueue", "start", "heartbeat"]


def test_a_move_with_a_wrong_lease_token_is_refused(store: Store) -> None:
    """A move carrying a lease token that does not hold the job is refused, even when state
    and version match, and writes no event."""
    row = held(store, "t1")
    stale = dataclasses.replace(finish(row), lease_token="t0")

    assert store.job_transition_many([stale]) == [False]
    assert get(store, row.id) == row
    assert triggers(store, row.id) == ["enqueue", "start"]


def test_a_move_without_a_lease_token_does_not_match_a_held_job(store: Store) -> None:
    """``lease_token=None`` matches only a job without a lease (NULL is compared as a value)."""
    row = held(store, "t1")
    unleased = dataclasses.replace(finish(row), lease_token=None)

    assert store.job_transition_many([unleased]) == [False]
    assert get(store, row.id) == row


def test_a_move_from_another_state_is_refused(store: Store) -> None:
    """A move whose ``from_state`` is not the job's state is refused."""
    row = held(store)
    wrong = dataclasses.replace(finish(row), from_state="pending")

    assert store.job_transition_many([wrong]) == [False]
    assert get(store, row.id) == row


def test_unless_cancelled_refuses_a_move_once_a_cancel_is_requested(store: Store) -> None:
    """A move marked ``unless_cancelled`` is refused (no event) once a cancel was requested;
    the same move without the mark still applies."""
    row = held(store)
    assert store.job_request_cancel(row, NOW)
    guarded = dataclasses.replace(finish(row), unless_cancelled=True)

    assert store.job_transition_many([guarded]) == [False]
    assert get(store, row.id).state == "running"
    assert triggers(store, row.id) == ["enqueue", "start"]
    assert store.job_transition_many([finish(row)]) == [True]


def test_unless_cancelled_applies_when_no_cancel_is_requested(store: Store) -> None:
    """``unless_cancelled`` adds nothing while no cancel was requested."""
    row = held(store)
    guarded = dataclasses.replace(finish(row), unless_cancelled=True)

    assert store.job_transition_many([guarded]) == [True]
    assert get(store, row.id).state == "succeeded"


def test_a_batch_with_one_stale_move_applies_the_others(store: Store) -> None:
    """In one batch a refused move does not hold back the others: each result says which
    applied, and only those got their values and events."""
    rows = [held(store) for _ in range(3)]
    apply(store, move(rows[1], "running", trigger="heartbeat"))  # the second goes stale

    assert store.job_transition_many([finish(r) for r in rows]) == [True, False, True]
    assert [get(store, r.id).state for r in rows] == ["succeeded", "running", "succeeded"]
    assert [triggers(store, r.id)[-1] for r in rows] == ["finish", "heartbeat", "finish"]
    assert count(store, job_events, trigger="finish") == 2


def test_two_moves_from_one_read_of_a_job_apply_once(store: Store) -> None:
    """Two moves planned from the same row (two racing planners) in one batch: the first
    applies, the second is refused."""
    row = held(store)
    moves = [finish(row, "succeeded"), finish(row, "failed")]

    assert store.job_transition_many(moves) == [True, False]
    assert get(store, row.id).state == "succeeded"
    assert triggers(store, row.id) == ["enqueue", "start", "finish"]


def test_a_batch_mixing_columns_applies_each_move(store: Store) -> None:
    """Moves writing different columns in one batch each apply, with their own values."""
    a, b = held(store), held(store)
    moves = [finish(a, result={"ok": 1}), move(b, "running", trigger="heartbeat")]

    assert store.job_transition_many(moves) == [True, True]
    assert (get(store, a.id).state, get(store, a.id).result) == ("succeeded", {"ok": 1})
    assert (get(store, b.id).state, get(store, b.id).version) == ("running", b.version + 1)


# -- job_claim_due ---------------------------------------------------------------------------


def test_a_claim_whose_plan_fails_keeps_nothing_and_the_next_claim_works(store: Store) -> None:
    """A claim that fails halfway (here its plan; on PostgreSQL after its BEGIN went out
    with the select on an autocommit connection) rolls back: no row stays locked or
    moved, and the next claim (on the same pooled connection) takes the jobs."""
    ids = [insert(store) for _ in range(3)]

    def failing(_row: JobRow, _at: datetime | None) -> Move | None:
        raise RuntimeError("the plan broke")

    for _ in range(3):
        with pytest.raises(RuntimeError, match="the plan broke"):
            claim(store, failing)
    assert {get(store, job_id).state for job_id in ids} == {"pending"}
    assert sorted(claim(store)) == sorted(ids)
    assert {get(store, job_id).state for job_id in ids} == {"running"}


def test_claim_takes_the_highest_priority_first_then_the_oldest_due(store: Store) -> None:
    """Due jobs are claimed by priority (highest first), then due_at, then id; ``limit``
    cuts that order."""
    low_old = insert(store, priority=0, due_at=later(-30))
    high_new = insert(store, priority=5, due_at=later(-10))
    high_old = insert(store, priority=5, due_at=later(-20))
    low_old_too = insert(store, priority=0, due_at=later(-30))

    assert claim(store, limit=3) == [high_old, high_new, low_old]
    assert get(store, low_old_too).state == "pending"
    assert claim(store) == [low_old_too]


def test_claim_takes_only_due_jobs(store: Store) -> None:
    """Only jobs with due_at at or before ``now`` are claimed (not later ones, not running
    ones, whose due_at is NULL)."""
    due_now = insert(store, due_at=NOW)
    due_later = insert(store, due_at=later(1))
    running = held(store).id

    assert claim(store) == [due_now]
    assert get(store, due_later).state == "pending"
    assert get(store, running).version == 1


def test_claim_takes_only_the_given_kinds(store: Store) -> None:
    """Only jobs of ``kinds`` are claimed."""
    email, sms = insert(store, kind="email"), insert(store, kind="sms")

    assert claim(store, kinds=["sms"]) == [sms]
    assert get(store, email).state == "pending"


def test_claim_takes_only_the_given_states(store: Store) -> None:
    """Only jobs in ``states`` are claimed."""
    pending, waiting = insert(store, state="pending"), insert(store, state="waiting")

    assert claim(store, states=["waiting"]) == [waiting]
    assert get(store, pending).state == "pending"


def test_claim_takes_only_the_given_queues(store: Store) -> None:
    """``queues`` restricts the claim to those queues; None means every queue."""
    default, bulk = insert(store, queue="default"), insert(store, queue="bulk")

    assert claim(store, queues=["bulk"]) == [bulk]
    assert get(store, default).state == "pending"
    assert claim(store, queues=None) == [default]


def test_claim_takes_at_most_limit_jobs(store: Store) -> None:
    """A claim takes at most ``limit`` jobs and leaves the rest waiting."""
    ids = [insert(store) for _ in range(5)]

    assert claim(store, limit=2) == ids[:2]
    assert [get(store, i).state for i in ids] == ["running"] * 2 + ["pending"] * 3


def test_claim_with_nothing_to_claim_from_calls_no_plan(store: Store) -> None:
    """``limit`` 0, no kinds or an empty queue list claim nothing and never call ``plan``."""
    job_id = insert(store)
    seen: list[JobRow] = []
    for options in ({"limit": 0}, {"kinds": []}, {"queues": []}):
        assert claim(store, starter(seen=seen), **options) == []
    assert seen == [] and get(store, job_id).state == "pending"


def test_claim_applies_each_planned_move_with_its_event(store: Store) -> None:
    """Each claimed pair is the row as read (a JobRow) and the move applied to it; the move's
    values and event are in the database when the claim returns."""
    job_id = insert(store)
    pairs = store.job_claim_due(
        now=NOW, limit=10, kinds=[KIND], states=["pending"], plan=starter("t9")
    )

    [(row, applied)] = pairs
    assert type(row) is JobRow and (row.id, row.state, row.version) == (job_id, "pending", 0)
    assert applied.values["lease_token"] == "t9"
    after = get(store, job_id)
    assert (after.state, after.lease_token, after.version) == ("running", "t9", 1)
    assert triggers(store, job_id) == ["enqueue", "start"]


def test_claim_skips_rows_the_plan_declines(store: Store) -> None:
    """A row for which ``plan`` returns None is left as it is and not returned."""
    skipped, taken = insert(store), insert(store)

    def plan(row: JobRow, tx_time: datetime | None) -> Move | None:
        return None if row.id == skipped else start(row)

    assert claim(store, plan) == [taken]
    assert get(store, skipped).version == 0 and triggers(store, skipped) == ["enqueue"]


def test_claim_drops_a_planned_move_that_does_not_apply(store: Store) -> None:
    """A planned move that loses its compare-and-set is not returned and writes no event."""
    stale, fresh = insert(store), insert(store)

    def plan(row: JobRow, tx_time: datetime | None) -> Move:
        planned = start(row)
        return dataclasses.replace(planned, version=7) if row.id == stale else planned

    assert claim(store, plan) == [fresh]
    assert get(store, stale).state == "pending" and triggers(store, stale) == ["enqueue"]


def test_claim_plan_gets_the_database_time_on_postgresql_only(store: Store, backend: str) -> None:
    """``plan``'s second argument is the database's time read under the claim's lock on
    PostgreSQL (aware UTC), and None on SQLite."""
    insert(store)
    times: list[datetime | None] = []

    def plan(row: JobRow, tx_time: datetime | None) -> Move:
        times.append(tx_time)
        return start(row)

    claim(store, plan)
    [tx_time] = times
    if backend == "sqlite":
        assert tx_time is None
    else:
        assert tx_time is not None and is_aware_utc(tx_time)
        assert abs(tx_time - store.db_now()) < timedelta(minutes=1)


# -- job_rescue_expired ----------------------------------------------------------------------


def rescue(store: Store, seen: list[JobRow], **options: Any) -> list[int]:
    """Rescue with ``job_rescue_expired`` (defaults: now, 10 rows, KIND); the ids moved."""
    arguments: dict[str, Any] = {"now": NOW, "limit": 10, "kinds": [KIND]}
    arguments.update(options)
    return [row.id for row, _ in store.job_rescue_expired(plan=releaser(seen), **arguments)]


def test_rescue_takes_only_expired_leases(store: Store) -> None:
    """Only jobs whose lease ended strictly before ``now`` are rescued; pending jobs and
    leases ending at or after ``now`` are not even shown to ``plan``."""
    expired = held(store, expires=later(-1)).id
    ending_now = held(store, expires=NOW).id
    live = held(store, expires=later(60)).id
    pending = insert(store)
    seen: list[JobRow] = []

    assert rescue(store, seen) == [expired]
    assert [row.id for row in seen] == [expired]
    assert get(store, expired).state == "pending" and triggers(store, expired)[-1] == "expire"
    for job_id in (ending_now, live):
        assert get(store, job_id).state == "running"
    assert get(store, pending).version == 0


def test_rescue_honours_exclude(store: Store) -> None:
    """Jobs in ``exclude`` (leases this process still holds) are never rescued."""
    mine = held(store, expires=later(-10)).id
    lost = held(store, expires=later(-5)).id
    seen: list[JobRow] = []

    assert rescue(store, seen, exclude=[mine]) == [lost]
    assert get(store, mine).state == "running" and [r.id for r in seen] == [lost]


def test_rescue_takes_only_the_given_kinds(store: Store) -> None:
    """Only jobs of ``kinds`` are rescued."""
    email = held(store, expires=later(-1), kind="email").id
    sms = held(store, expires=later(-1), kind="sms").id

    assert rescue(store, [], kinds=["sms"]) == [sms]
    assert get(store, email).state == "running"


def test_rescue_takes_the_oldest_expiries_up_to_limit(store: Store) -> None:
    """Up to ``limit`` jobs are rescued, the longest expired first."""
    recent = held(store, expires=later(-1)).id
    oldest = held(store, expires=later(-30)).id
    older = held(store, expires=later(-20)).id

    assert rescue(store, [], limit=2) == [oldest, older]
    assert get(store, recent).state == "running"


# -- job_mark_started / lease_renew ----------------------------------------------------------


def test_mark_started_writes_only_jobs_held_under_the_token(store: Store) -> None:
    """``started_at`` is set on the given jobs still held under the token, and only those are
    returned; the version is unchanged (the holder's next move still applies)."""
    mine, theirs = held(store, "t1"), held(store, "t2")
    pending = insert(store)

    assert store.job_mark_started([mine.id, theirs.id, pending], "t1", later(5)) == {mine.id}
    assert get(store, mine.id).started_at == later(5)
    assert get(store, mine.id).version == mine.version
    assert get(store, theirs.id).started_at is None and get(store, pending).started_at is None
    assert store.job_transition_many([finish(mine)]) == [True]


def test_mark_started_skips_a_job_asked_to_cancel(store: Store) -> None:
    """A job whose cancel was requested after its claim is not marked started."""
    row = held(store, "t1")
    assert store.job_request_cancel(row, NOW)

    assert store.job_mark_started([row.id], "t1", later(5)) == set()
    assert get(store, row.id).started_at is None


def test_lease_renew_extends_only_jobs_held_under_the_token(store: Store) -> None:
    """The lease end moves only for jobs held under the token (those are returned); the
    version is unchanged (the holder's next move still applies)."""
    mine, theirs = held(store, "t1"), held(store, "t2")
    released = get(store, finished(store))

    renewed = store.lease_renew([mine.id, theirs.id, released.id], "t1", later(900))
    assert renewed == {mine.id}
    assert get(store, mine.id).lease_expires_at == later(900)
    assert get(store, mine.id).version == mine.version
    assert get(store, theirs.id) == theirs and get(store, released.id) == released
    assert store.job_transition_many([finish(mine)]) == [True]


def test_lease_renew_after_the_lease_was_taken_over_renews_nothing(store: Store) -> None:
    """Once a rescue re-leased the job to another token, the old holder cannot extend it."""
    row = held(store, "t1", expires=later(-1))
    rescue(store, [])
    apply(store, start(get(store, row.id), "t2"))
    taken_over = get(store, row.id)

    assert store.lease_renew([row.id], "t1", later(900)) == set()
    assert get(store, row.id) == taken_over


# -- job_request_cancel / job_clear_cancel / job_cancel_requested ----------------------------


def test_request_cancel_marks_the_job_and_keeps_its_version(store: Store) -> None:
    """A cancel request sets cancel_requested_at and nothing else: same state, version and
    lease, no event."""
    row = held(store)

    assert store.job_request_cancel(row, later(7))
    after = get(store, row.id)
    assert after.cancel_requested_at == later(7)
    assert after == row._replace(cancel_requested_at=later(7))
    assert store.job_cancel_requested(row.id)
    assert triggers(store, row.id) == ["enqueue", "start"]


def test_a_cancel_request_does_not_fence_out_the_holder(store: Store) -> None:
    """After a cancel request the holder's plain move (no ``unless_cancelled``) still applies."""
    row = held(store)
    assert store.job_request_cancel(row, NOW)

    assert store.job_transition_many([finish(row)]) == [True]
    assert get(store, row.id).state == "succeeded"


def test_request_cancel_is_refused_for_a_changed_row(store: Store) -> None:
    """A cancel request made from a row that has changed since is refused and writes nothing."""
    row = held(store)
    apply(store, move(row, "running", trigger="heartbeat"))

    assert not store.job_request_cancel(row, NOW)
    assert get(store, row.id).cancel_requested_at is None
    assert not store.job_cancel_requested(row.id)


def test_clear_cancel_drops_the_request(store: Store) -> None:
    """A cleared cancel request no longer shows, nor stops the job from starting."""
    row = held(store)
    assert store.job_request_cancel(row, NOW)

    store.job_clear_cancel(row.id)
    assert get(store, row.id).cancel_requested_at is None
    assert not store.job_cancel_requested(row.id)
    assert store.job_mark_started([row.id], "t1", NOW) == {row.id}


def test_cancel_requested_is_false_for_an_unknown_job(store: Store) -> None:
    """Asking about a job that does not exist answers False."""
    assert not store.job_cancel_requested(12345)


# -- step_record / step_get_many -------------------------------------------------------------


def record(store: Store, job_id: int, token: str | None, name: str, result: Any) -> bool:
    return store.step_record(
        job_id=job_id, lease_token=token, name=name, result=result, attempt=1, at=NOW
    )


def test_step_record_is_fenced_by_the_lease_token(store: Store) -> None:
    """Only the holder of the job's lease records a step: another token, or none, is refused
    and stores nothing."""
    row = held(store, "t1")

    assert not record(store, row.id, "t0", "send", 1)
    assert not record(store, row.id, None, "send", 1)
    assert count(store, job_steps) == 0
    assert record(store, row.id, "t1", "send", {"id": 3})
    assert store.step_get_many([row.id]) == {row.id: {"send": {"id": 3}}}


def test_step_record_for_an_unknown_job_is_refused(store: Store) -> None:
    """A step of a job that does not exist (pruned, say) is refused."""
    assert not record(store, 12345, "t1", "send", 1)
    assert count(store, job_steps) == 0


def test_step_record_first_write_wins(store: Store) -> None:
    """Recording a step already recorded keeps the first result (and is not a lost lease)."""
    row = held(store, "t1")
    assert record(store, row.id, "t1", "send", "first")

    assert record(store, row.id, "t1", "send", "second")
    assert store.step_get_many([row.id]) == {row.id: {"send": "first"}}
    assert count(store, job_steps) == 1


def test_step_get_many_groups_results_by_job(store: Store) -> None:
    """Results come back per job and step name; jobs without steps and jobs not asked for
    are absent."""
    a, b, c, no_steps = held(store, "t1"), held(store, "t1"), held(store, "t1"), held(store, "t1")
    assert record(store, a.id, "t1", "send", {"n": 1})
    assert record(store, a.id, "t1", "log", [1, 2])
    assert record(store, b.id, "t1", "send", None)
    assert record(store, c.id, "t1", "send", "c")

    found = store.step_get_many([a.id, b.id, no_steps.id])
    assert found == {a.id: {"send": {"n": 1}, "log": [1, 2]}, b.id: {"send": None}}
    assert store.step_get_many([]) == {}


# -- job_prune + key_get ---------------------------------------------------------------------


def test_prune_deletes_final_jobs_finished_before_the_cutoff_with_their_history(
    store: Store,
) -> None:
    """Jobs in the given final states finished before the cutoff go, with their events and
    steps; recent, unfinished and other-state jobs stay."""
    old = held(store, "t1")
    assert record(store, old.id, "t1", "send", 1)
    apply(store, finish(old, at=later(-2 * 86400)))
    recent = finished(store, at=NOW)
    unfinished = insert(store)
    kept_state = finished(store, to="quarantined", at=later(-2 * 86400))

    assert store.job_prune(finished_before=NOW - DAY, states=FINAL, now=NOW) == (1, 0)
    assert store.job_get(old.id) is None
    assert count(store, job_events, job_id=old.id) == 0
    assert count(store, job_steps, job_id=old.id) == 0
    assert store.job_get_many([recent, unfinished, kept_state]).keys() == {
        recent,
        unfinished,
        kept_state,
    }


def test_prune_deletes_at_most_limit_jobs(store: Store) -> None:
    """``limit`` bounds the jobs deleted, counting only prunable ones."""
    kept = finished(store, to="quarantined", at=later(-3 * 86400))
    ids = [finished(store, at=later(-2 * 86400)) for _ in range(3)]

    assert store.job_prune(finished_before=NOW - DAY, states=FINAL, now=NOW, limit=2) == (2, 0)
    assert len(store.job_get_many(ids)) == 1 and store.job_get(kept) is not None


def test_a_pruned_jobs_key_outlives_it_until_expiry(store: Store) -> None:
    """A pruned job's key keeps its id, final state and result until the key expires, and
    still dedupes inserts to that id."""
    job_id = finished(store, "order-1", key_expires_at=later(7 * 86400))

    assert store.job_prune(finished_before=later(1), states=FINAL, now=later(86400)) == (1, 0)
    assert store.job_get(job_id) is None
    assert store.key_get(KIND, "order-1") == KeyRow(
        kind=KIND,
        key="order-1",
        job_id=job_id,
        created_at=NOW,
        expires_at=later(7 * 86400),
        final_state="succeeded",
        result={"sent": job_id},
    )
    again = new_job("order-1", created_at=later(2 * 86400))
    assert insert_drafts(store, [again]) == [(job_id, False)]
    assert count(store, jobs) == 0


def test_prune_deletes_a_pruned_jobs_key_once_expired(store: Store) -> None:
    """A key whose job is pruned goes with the first prune after it expires; the key is then
    free for a new job (with a new id)."""
    job_id = finished(store, "order-1", key_expires_at=later(86400))
    assert store.job_prune(finished_before=later(1), states=FINAL, now=later(60)) == (1, 0)

    assert store.job_prune(finished_before=later(1), states=FINAL, now=later(86400)) == (0, 1)
    assert store.key_get(KIND, "order-1") is None
    new = insert(store, "order-1", created_at=later(86401))
    assert new != job_id


def test_prune_keeps_an_expired_key_whose_job_is_kept(store: Store) -> None:
    """An expired key stays while its job row exists (unfinished, or final in a state not
    pruned): that job can still run or be requeued, and must find its key."""
    unfinished = insert(store, "order-1", key_expires_at=NOW)
    quarantined = finished(store, "order-2", to="quarantined", key_expires_at=NOW)

    assert store.job_prune(finished_before=later(60), states=FINAL, now=later(60)) == (0, 0)
    held_by = store.key_get(KIND, "order-1"), store.key_get(KIND, "order-2")
    assert [key.job_id if key else None for key in held_by] == [unfinished, quarantined]


def test_key_get_of_an_unknown_key_is_none(store: Store) -> None:
    """``key_get`` of a key never taken (in that kind) is None."""
    insert(store, "order-1")
    assert store.key_get(KIND, "order-2") is None
    assert store.key_get("sms", "order-1") is None


# -- typed rows: job_get / job_get_many / job_events / key_get -------------------------------


def test_job_get_returns_a_jobrow_with_aware_utc_datetimes(store: Store) -> None:
    """``job_get`` returns the JobRow dataclass (not a SQLAlchemy Row), with every datetime
    timezone-aware UTC and JSON columns decoded; an unknown id gives None."""
    row = held(store, payload={"to": ["a", "b"], "n": 1.5})

    assert type(row) is JobRow
    assert row.payload == {"to": ["a", "b"], "n": 1.5}
    for name in ("created_at", "updated_at", "lease_expires_at"):
        assert is_aware_utc(getattr(row, name)), name
    assert row.lease_expires_at == LEASE_END
    assert store.job_get(12345) is None


def test_job_get_many_returns_jobrows_by_id(store: Store) -> None:
    """``job_get_many`` maps each id found to its JobRow; unknown ids are absent."""
    a, b = insert(store), insert(store)

    found = store.job_get_many([a, b, 12345])
    assert found.keys() == {a, b}
    assert all(type(row) is JobRow for row in found.values())
    assert found[a] == get(store, a)
    assert store.job_get_many([]) == {}


def test_job_events_returns_event_records_oldest_first(store: Store) -> None:
    """``job_events`` gives EventRecord dataclasses in the order written, datetimes aware."""
    row = held(store)
    apply(store, finish(row, at=later(9)))

    events = store.job_events(row.id)
    assert all(type(event) is EventRecord for event in events)
    assert [(e.trigger, e.from_state, e.to_state, e.attempt) for e in events] == [
        ("enqueue", None, "pending", 0),
        ("start", "pending", "running", 0),
        ("finish", "running", "succeeded", 1),
    ]
    assert [e.at for e in events] == [NOW, NOW, later(9)]
    assert all(is_aware_utc(e.at) for e in events)
    assert store.job_events(12345) == []


def test_key_get_returns_a_keyrow(store: Store) -> None:
    """``key_get`` returns the KeyRow dataclass: holder, created and expiry (aware UTC)."""
    job_id = insert(store, "order-1", key_expires_at=later(60))

    key = store.key_get(KIND, "order-1")
    assert type(key) is KeyRow
    assert key == KeyRow(KIND, "order-1", job_id, NOW, later(60), None, None)
    assert is_aware_utc(key.expires_at)


# -- job_park --------------------------------------------------------------------------------


def test_park_clears_the_lease_end_and_records_the_error(store: Store) -> None:
    """A parked job keeps its state, lease token and version, loses its lease end and
    records the error; no later rescue picks it up."""
    row = held(store, expires=later(-1))

    assert store.job_park(row, "Unrescuable", "no transition can rescue this job")
    after = get(store, row.id)
    assert (after.state, after.lease_token, after.version) == ("running", "t1", row.version)
    assert after.lease_expires_at is None
    assert (after.last_error_class, after.last_error_message, after.last_error_traceback) == (
        "Unrescuable",
        "no transition can rescue this job",
        "",
    )
    seen: list[JobRow] = []
    assert rescue(store, seen, now=later(10 * 86400)) == [] and seen == []


def test_park_cuts_the_message_to_2000_characters(store: Store) -> None:
    """The recorded message is cut to 2000 characters."""
    row = held(store)

    assert store.job_park(row, "Unrescuable", "x" * 5000)
    assert get(store, row.id).last_error_message == "x" * 2000


def test_park_is_refused_for_a_changed_row(store: Store) -> None:
    """Parking from a row that changed since (new version) is refused and writes nothing."""
    row = held(store, expires=later(-1))
    apply(store, move(row, "running", trigger="heartbeat"))
    current = get(store, row.id)

    assert not store.job_park(row, "Unrescuable", "stale")
    assert get(store, row.id) == current and current.lease_expires_at == later(-1)


def test_park_is_refused_under_another_lease_token(store: Store) -> None:
    """Parking with a lease token that does not hold the job is refused."""
    row = held(store, "t1", expires=later(-1))

    assert not store.job_park(row._replace(lease_token="t2"), "Unrescuable", "x")
    assert get(store, row.id) == row


# -- job_requeue -----------------------------------------------------------------------------


def requeue_move(row: JobRow) -> Move:
    """An operator's requeue of a final ``row``: pending and due again, not finished."""
    return move(row, "pending", trigger="requeue", due_at=NOW, finished_at=None, attempt=0)


def test_requeue_applies_and_takes_the_key_back(store: Store) -> None:
    """A requeue of a keyed final job applies and renews its key's expiry; returns its id."""
    job_id = finished(store, "order-1", to="failed", key_expires_at=later(60))
    row = get(store, job_id)

    assert store.job_requeue(requeue_move(row), KIND, "order-1", later(3600)) == job_id
    assert get(store, job_id).state == "pending" and triggers(store, job_id)[-1] == "requeue"
    key = store.key_get(KIND, "order-1")
    assert key is not None and (key.job_id, key.expires_at) == (job_id, later(3600))


def test_requeue_is_refused_while_another_job_holds_the_key(store: Store) -> None:
    """When a newer job holds the key live, the requeue returns that job's id and applies
    nothing."""
    old = finished(store, "order-1", to="failed", key_expires_at=NOW)
    new = insert(store, "order-1", created_at=later(1), key_expires_at=later(3600))
    row = get(store, old)

    assert store.job_requeue(requeue_move(row), KIND, "order-1", later(3600)) == new
    assert get(store, old) == row and triggers(store, old)[-1] == "finish"
    key = store.key_get(KIND, "order-1")
    assert key is not None and key.job_id == new


def test_requeue_of_a_changed_row_returns_0_and_leaves_the_key(store: Store) -> None:
    """A requeue planned from a stale row applies nothing, not even the key's new expiry."""
    job_id = finished(store, "order-1", to="failed", key_expires_at=later(60))
    stale = dataclasses.replace(requeue_move(get(store, job_id)), version=0)

    assert store.job_requeue(stale, KIND, "order-1", later(3600)) == 0
    assert get(store, job_id).state == "failed"
    key = store.key_get(KIND, "order-1")
    assert key is not None and key.expires_at == later(60)
