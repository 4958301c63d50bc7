"""Cron schedules and pollers on real databases (SQLite file and PostgreSQL) with a frozen
clock: exactly-once slots across schedulers, misfire and overlap policies, DST days in
Europe/Paris, registration checks, restarts, the worker, the CLI, and properties of the
pure slot arithmetic.
"""

from __future__ import annotations

import itertools
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel
from structlog.testing import capture_logs

from engine import Engine, FrozenClock, Invariant, RegistrationError
from engine.cli import cli
from engine.store.schedules import ScheduleStore
from engine.timetable import (
    CronTrigger,
    IntervalTrigger,
    Misfire,
    Policy,
    plan,
)
from engine.worker import Worker

T0 = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = 60.0
HOUR = 3600.0

Build = Callable[..., Engine]


@pytest.fixture
def build(db_url: str) -> Iterator[Build]:
    """Engines on the test's database (each its own scheduler), closed afterwards."""
    made: list[Engine] = []

    def make(clock: FrozenClock | None = None) -> Engine:
        engine = Engine(db_url, clock=clock or FrozenClock(T0), seed=7)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def noop(ctx: Any, p: Any) -> None:
    """A handler with nothing to do."""


def fired_slots(engine: Engine, kind: str | None = None) -> list[str]:
    """The slot of every job a schedule created, oldest job first (from its creation event)."""
    rows = engine.store.job_list(kind=kind, limit=10_000)
    return [engine.get(row.id).history[0].detail["slot"] for row in reversed(rows)]  # type: ignore[index]


def last_slot(engine: Engine, name: str) -> datetime | None:
    return ScheduleStore(engine.store).states([name])[name].last_slot


def at(hours: float = 0, minutes: float = 0, seconds: float = 0) -> str:
    """The ISO text of T0 plus an offset, as slots are recorded."""
    return (T0 + timedelta(hours=hours, minutes=minutes, seconds=seconds)).isoformat()


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


# -- exactly once across schedulers ------------------------------------------------------


def test_each_slot_fires_once_with_two_schedulers_on_one_database(build: Build) -> None:
    """Two engines tick the same schedule in turns: every slot makes one job, not two."""
    clock = FrozenClock(T0)
    engines = [build(clock), build(clock)]
    for engine in engines:
        engine.cron("*/5 * * * *", kind="report")(noop)
        assert engine.fire_schedules() == 0  # seen for the first time: nothing retroactive
    created = 0
    for step in range(12):
        clock.advance(5 * MINUTE)
        for engine in engines if step % 2 else reversed(engines):
            created += engine.fire_schedules()
            engine.tick()
    expected = [at(minutes=5 * k) for k in range(1, 13)]
    assert fired_slots(engines[0]) == expected
    assert created == len(expected)
    assert all(engines[0].get(i).state == "succeeded" for i in range(1, len(expected) + 1))


def test_racing_threads_fire_each_slot_once(build: Build) -> None:
    """Six schedulers released together at each slot: exactly one job per slot in all."""
    clock = FrozenClock(T0)
    engines = [build(clock) for _ in range(6)]
    for engine in engines:
        engine.poller(every=MINUTE, kind="poll", overlap="allow")(noop)
        engine.fire_schedules()
    gate = threading.Barrier(len(engines))
    totals = [0] * len(engines)
    errors: list[BaseException] = []

    def scheduler(index: int) -> None:
        try:
            for round_ in range(5):
                gate.wait()
                if index == 0:
                    clock.set(T0 + timedelta(minutes=round_ + 1))
                gate.wait()
                totals[index] += engines[index].fire_schedules()
        except BaseException as error:
            errors.append(error)
            gate.abort()

    threads = [threading.Thread(target=scheduler, args=(i,)) for i in range(len(engines))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert fired_slots(engines[0]) == [at(minutes=m) for m in range(1, 6)]
    assert sum(totals) == 5


def test_a_stale_compare_and_set_writes_nothing(build: Build) -> None:
    """The loser of a race (its last slot is stale) inserts no job and moves nothing."""
    engine = build()
    engine.cron("0 * * * *", kind="hourly")(noop)
    engine.fire_schedules()
    table = ScheduleStore(engine.store)
    first = T0 + timedelta(hours=1)
    won = table.advance(
        name="hourly", kind="hourly", spec="x", old=T0, new=first, jobs_to_fire=[], now=first
    )
    lost = table.advance(
        name="hourly", kind="hourly", spec="x", old=T0, new=first, jobs_to_fire=[], now=first
    )
    assert won == [] and lost is None
    assert last_slot(engine, "hourly") == first


def test_the_slot_key_is_a_second_guard(build: Build) -> None:
    """Even if the last slot were set back, a slot's dedupe key stops a second job."""
    clock = FrozenClock(T0)
    engine = build(clock)
    engine.cron("0 * * * *", kind="hourly", overlap="allow")(noop)
    engine.fire_schedules()
    clock.advance(HOUR)
    assert engine.fire_schedules() == 1
    with engine.store.write() as conn:  # an operator's mistake: the last slot goes back
        conn.execute(sa.text("UPDATE schedules SET last_slot = NULL"))
    engine.schedules.note("hourly", T0)  # look again now
    with capture_logs() as logs:
        assert engine.fire_schedules() == 0
    assert [e["deduplicated"] for e in events(logs, "schedule.fired")] == [True]
    assert len(engine.store.job_list()) == 1


def test_a_restart_does_not_refire_and_resumes_from_the_stored_slot(build: Build) -> None:
    clock = FrozenClock(T0)
    first = build(clock)
    first.cron("*/10 * * * *", kind="sync", misfire="once")(noop)
    first.fire_schedules()
    clock.advance(10 * MINUTE)
    first.run_until_idle()
    first.close()
    again = build(clock)  # a new process, same database, same moment
    again.cron("*/10 * * * *", kind="sync", misfire="once")(noop)
    assert again.fire_schedules() == 0
    clock.advance(35 * MINUTE)  # down for three slots: once fires the latest only
    assert again.fire_schedules() == 1
    assert fired_slots(again) == [at(minutes=10), at(minutes=40)]


# -- misfire policies --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("misfire", "fired", "skipped"),
    [
        ("skip", [], (at(hours=1), at(hours=5), 5)),
        ("once", [at(hours=5)], (at(hours=1), at(hours=4), 4)),
        ("catch_up", [at(hours=3), at(hours=4), at(hours=5)], (at(hours=1), at(hours=2), 2)),
    ],
)
def test_misfire_policies_after_an_outage(
    build: Build, misfire: Misfire, fired: list[str], skipped: tuple[str, str, int]
) -> None:
    """Hourly, down from 00:00 to 05:10, one tick (overlap allow: all fire in that tick)."""
    clock = FrozenClock(T0)
    engine = build(clock)
    engine.cron("0 * * * *", kind="hourly", misfire=misfire, overlap="allow", max_catch_up=3)(noop)
    engine.tick()
    clock.advance(5 * HOUR + 10 * MINUTE)
    with capture_logs() as logs:
        engine.tick()
    assert fired_slots(engine) == fired
    (missed,) = [e for e in events(logs, "schedule.skipped") if e["reason"] == "misfire"]
    assert (missed["first_slot"], missed["slot"], missed["count"]) == skipped
    assert last_slot(engine, "hourly") == T0 + timedelta(hours=5)


def test_skip_fires_a_slot_that_is_on_time(build: Build) -> None:
    """Within the grace period a slot is on time; beyond it, it is skipped."""
    clock = FrozenClock(T0)
    engine = build(clock)
    engine.cron("0 * * * *", kind="hourly", grace=90.0)(noop)
    engine.tick()
    clock.advance(HOUR + 89)
    engine.tick()
    clock.advance(HOUR + 2)  # 02:01:31: 91 s late
    engine.tick()
    assert fired_slots(engine) == [at(hours=1)]
    assert last_slot(engine, "hourly") == T0 + timedelta(hours=2)


def test_catch_up_with_overlap_skip_runs_the_backlog_one_after_another(build: Build) -> None:
    """Overlap skip keeps one job at a time: each backlog slot fires once the last is done."""
    clock = FrozenClock(T0)
    engine = build(clock)
    engine.cron("0 * * * *", kind="hourly", misfire="catch_up", max_catch_up=4)(noop)
    engine.tick()
    clock.advance(6 * HOUR + 30)
    assert engine.fire_schedules() == 1  # the oldest of the four kept slots
    assert engine.fire_schedules() == 0  # its job has not run: the rest wait
    engine.run_until_idle()  # each tick runs one, and the next tick fires the next
    assert fired_slots(engine) == [at(hours=h) for h in (3, 4, 5, 6)]
    assert {row.state for row in engine.store.job_list()} == {"succeeded"}


# -- overlap -----------------------------------------------------------------------------


def test_overlap_skip_skips_slots_while_the_previous_job_is_unfinished(build: Build) -> None:
    clock = FrozenClock(T0)
    engine = build(clock)
    engine.poller(every=MINUTE, kind="poll")(noop)
    engine.fire_schedules()
    clock.advance(MINUTE)
    assert engine.fire_schedules() == 1  # its job stays pending: no tick runs it
    clock.advance(MINUTE)
    with capture_logs() as logs:
        assert engine.fire_schedules() == 0
    (skip,) = events(logs, "schedule.skipped")
    assert (skip["reason"], skip["slot"], skip["job_id"]) == ("overlap", at(minutes=2), 1)
    assert last_slot(engine, "poll") == T0 + timedelta(minutes=2)  # advanced all the same
    engine.run_until_idle()  # the first job finishes
    clock.advance(MINUTE)
    engine.run_until_idle()
    assert fired_slots(engine) == [at(minutes=1), at(minutes=3)]


def test_overlap_allow_fires_while_the_previous_job_is_unfinished(build: Build) -> None:
    clock = FrozenClock(T0)
    engine = build(clock)
    engine.poller(every=MINUTE, kind="poll", overlap="allow")(noop)
    engine.fire_schedules()
    for _ in range(3):
        clock.advance(MINUTE)
        assert engine.fire_schedules() == 1
    assert fired_slots(engine) == [at(minutes=m) for m in (1, 2, 3)]
    assert {row.state for row in engine.store.job_list()} == {"pending"}


def test_a_pruned_previous_job_counts_as_finished(build: Build) -> None:
    clock = FrozenClock(T0)
    engine = build(clock)
    engine.poller(every=HOUR, kind="poll")(noop)
    engine.fire_schedules()
    clock.advance(HOUR)
    engine.run_until_idle()
    clock.advance(3 * HOUR + 1)
    assert engine.prune(60)[0] == 1
    engine.run_until_idle()
    assert fired_slots(engine) == [at(hours=4)]


# -- time zones and DST ------------------------------------------------------------------


def walk(engine: Engine, clock: FrozenClock, end: datetime) -> None:
    """Fire schedules every minute until ``end`` (a scheduler that is always up)."""
    while clock.now() <= end:
        engine.fire_schedules()
        clock.advance(MINUTE)


def test_spring_forward_in_paris(build: Build) -> None:
    """29 March 2026, 02:00 CET -> 03:00 CEST: 02:30 does not exist and maps to 03:30."""
    clock = FrozenClock(datetime(2026, 3, 28, 22, 0, tzinfo=UTC))
    engine = build(clock)
    engine.cron("30 2 * * *", tz="Europe/Paris", kind="nightly", overlap="allow")(noop)
    engine.cron("*/30 * * * *", tz="Europe/Paris", kind="halfhourly", overlap="allow")(noop)
    walk(engine, clock, datetime(2026, 3, 30, 3, 0, tzinfo=UTC))
    assert fired_slots(engine, "nightly") == [
        "2026-03-29T01:30:00+00:00",  # 03:30 CEST: the nonexistent 02:30 CET, one hour on
        "2026-03-30T00:30:00+00:00",  # 02:30 CEST the next night
    ]
    halfhourly = fired_slots(engine, "halfhourly")
    instants = [datetime.fromisoformat(s) for s in halfhourly]
    assert all(b - a == timedelta(minutes=30) for a, b in itertools.pairwise(instants))
    assert len(halfhourly) == len(set(halfhourly))


def test_fall_back_in_paris(build: Build) -> None:
    """25 October 2026, 03:00 CEST -> 02:00 CET: 02:30 happens twice and fires once."""
    clock = FrozenClock(datetime(2026, 10, 24, 20, 0, tzinfo=UTC))
    engine = build(clock)
    engine.cron("30 2 * * *", tz="Europe/Paris", kind="nightly", overlap="allow")(noop)
    engine.cron("0 * * * *", tz="Europe/Paris", kind="hourly", overlap="allow")(noop)
    walk(engine, clock, datetime(2026, 10, 25, 4, 0, tzinfo=UTC))
    assert fired_slots(engine, "nightly") == ["2026-10-25T00:30:00+00:00"]  # 02:30 CEST only
    assert fired_slots(engine, "hourly") == [
        "2026-10-24T21:00:00+00:00",
        "2026-10-24T22:00:00+00:00",  # 00:00 CEST
        "2026-10-24T23:00:00+00:00",  # 01:00 CEST
        "2026-10-25T00:00:00+00:00",  # 02:00 CEST, the first of the two 02:00s
        "2026-10-25T02:00:00+00:00",  # 03:00 CET (the second 02:00 is not a new slot)
        "2026-10-25T03:00:00+00:00",
        "2026-10-25T04:00:00+00:00",
    ]


# -- registration ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("61 * * * *", "out of range"),
        ("* * *", "Exactly 5, 6 or 7 columns"),
        ("a b c d e", "is not acceptable"),
        ("0 0 31 2 *", "never fires"),
    ],
)
def test_a_malformed_cron_expression_is_refused_with_croniters_reason(
    build: Build, expr: str, reason: str
) -> None:
    engine = build()
    with pytest.raises(RegistrationError, match=reason) as caught:
        engine.cron(expr, kind="bad")(noop)
    assert expr in str(caught.value)
    assert "bad" not in engine.registry.kinds and not engine.schedules


def test_an_unknown_time_zone_is_refused(build: Build) -> None:
    engine = build()
    with pytest.raises(RegistrationError, match="No time zone found with key Mars/Olympus"):
        engine.cron("0 * * * *", tz="Mars/Olympus", kind="bad")(noop)
    with pytest.raises(RegistrationError, match="unknown time zone"):
        engine.cron("0 * * * *", tz="../etc/passwd", kind="bad")(noop)
    assert "bad" not in engine.registry.kinds


def test_other_refusals(build: Build) -> None:
    engine = build()
    with pytest.raises(RegistrationError, match="misfire must be one of"):
        engine.cron("0 * * * *", kind="a", misfire="later")(noop)  # type: ignore[arg-type]
    with pytest.raises(RegistrationError, match="every must be at least"):
        engine.poller(every=0, kind="a")(noop)
    with pytest.raises(RegistrationError, match="max_catch_up"):
        engine.poller(every=1, kind="a", max_catch_up=0)(noop)
    with pytest.raises(RegistrationError, match="no such job kind"):
        engine.schedule("missing", cron="0 * * * *")
    engine.job(idempotency=Invariant("harmless"), kind="a")(noop)
    with pytest.raises(RegistrationError, match="exactly one of cron= or every="):
        engine.schedule("a", cron="0 * * * *", every=60)
    engine.schedule("a", every=60)
    with pytest.raises(RegistrationError, match="already registered; pass name="):
        engine.schedule("a", cron="0 * * * *")
    engine.schedule("a", cron="0 * * * *", name="a-hourly")
    assert sorted(s.name for s in engine.schedules) == ["a", "a-hourly"]


class Report(BaseModel):
    scope: str
    limit: int = 10


def test_the_payload_is_validated_at_registration(build: Build) -> None:
    engine = build()
    with pytest.raises(RegistrationError, match="does not validate against Report"):
        engine.cron("0 * * * *", kind="r", payload=Report, data={"limit": 3})(noop)
    assert "r" not in engine.registry.kinds
    engine.cron("0 * * * *", kind="r", payload=Report, data={"scope": "all"})(noop)
    assert engine.schedules.get("r").payload == {"scope": "all", "limit": 10}  # type: ignore[union-attr]


def test_a_cron_kind_says_how_its_slots_are_deduplicated(build: Build) -> None:
    engine = build()
    engine.cron("0 * * * *", kind="hourly")(noop)
    why = engine.registry.get("hourly").idempotency
    assert isinstance(why, Invariant) and "cron:hourly:<slot>" in why.reason


def test_a_schedule_on_a_keyed_kind_keys_each_slot_apart(build: Build) -> None:
    """The kind's own key would merge every slot's job into one; the slot key does not."""
    clock = FrozenClock(T0)
    engine = build(clock)
    engine.job(payload=Report, idempotency=lambda p: f"report:{p.scope}", kind="report")(noop)
    engine.schedule("report", every=HOUR, payload={"scope": "daily"}, overlap="allow")
    engine.fire_schedules()
    for _ in range(3):
        clock.advance(HOUR)
        engine.fire_schedules()
    keys = [row.idempotency_key for row in reversed(engine.store.job_list())]
    assert keys == [f"every:report:{at(hours=h)}" for h in (1, 2, 3)]
    assert engine.enqueue("report", {"scope": "daily"}) not in (1, 2, 3)  # its own key


# -- pollers -----------------------------------------------------------------------------


def test_a_poller_fires_on_anchored_slots_however_long_it_runs(build: Build) -> None:
    """Each run takes 40 s of a 30 s cadence: slots stay on multiples of 30 s (no drift
    from run durations), and slots that passed during a run are not fired late."""
    clock = FrozenClock(T0 + timedelta(seconds=5))
    engine = build(clock)
    runs: list[datetime] = []

    def slow(ctx: Any, p: Any) -> None:
        runs.append(clock.now())
        clock.advance(40)

    engine.poller(every=30.0, kind="poll")(slow)
    engine.tick()
    for _ in range(8):
        clock.advance(7)
        engine.tick()
    slots = [datetime.fromisoformat(s) for s in fired_slots(engine)]
    assert slots and all((s - T0).total_seconds() % 30 == 0 for s in slots)
    assert len(runs) == len(slots) and len(set(slots)) == len(slots)
    assert [(s - T0).total_seconds() for s in slots] == [30, 60, 120, 150, 210]


def test_a_poller_anchor_shifts_its_slots(build: Build) -> None:
    clock = FrozenClock(T0)
    engine = build(clock)
    engine.poller(every=MINUTE, anchor=T0 + timedelta(seconds=10), kind="poll")(noop)
    engine.tick()
    clock.advance(75)
    engine.tick()
    assert fired_slots(engine) == [at(minutes=1, seconds=10)]


# -- cost, sleeping, the worker -----------------------------------------------------------


def count_statements(engine: Engine) -> list[str]:
    seen: list[str] = []
    sa.event.listen(engine.store.db, "before_cursor_execute", lambda *args: seen.append(args[2]))
    return seen


def test_no_query_without_schedules_or_before_a_slot_is_due(build: Build) -> None:
    clock = FrozenClock(T0)
    engine = build(clock)
    seen = count_statements(engine)
    assert engine.fire_schedules(clock.now()) == 0 and seen == []
    engine.poller(every=HOUR, kind="poll")(noop)
    engine.fire_schedules()
    seen.clear()
    clock.advance(HOUR - 1)
    assert engine.fire_schedules() == 0 and seen == []  # the next slot is known: no query
    clock.advance(1)
    assert engine.fire_schedules() == 1 and seen


def test_sleep_for_wakes_an_idle_worker_for_the_next_slot(build: Build) -> None:
    clock = FrozenClock(T0)
    engine = build(clock)
    engine.cron("*/5 * * * *", kind="report")(noop)
    assert engine.sleep_for(600.0) == 0.0  # not looked at yet: look now
    engine.tick()
    assert engine.sleep_for(600.0) == pytest.approx(300.0)
    clock.advance(299)
    assert engine.sleep_for(600.0) == pytest.approx(1.0)


def test_the_worker_fires_schedules(build: Build) -> None:
    clock = FrozenClock(T0)
    engine = build(clock)
    engine.cron("*/5 * * * *", kind="report")(noop)
    engine.fire_schedules()
    clock.advance(5 * MINUTE)
    totals = Worker(engine, poll_interval=0.05).run(until_idle=True)
    assert totals.succeeded == 1
    assert fired_slots(engine) == [at(minutes=5)]


# -- the CLI -----------------------------------------------------------------------------


def test_the_schedules_command_lists_specs_policies_and_slots(
    build: Build, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = f"sched_app_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from datetime import UTC, datetime
            from engine import Engine, FrozenClock

            engine = Engine(clock=FrozenClock(datetime(2026, 1, 1, 0, 7, tzinfo=UTC)))

            @engine.cron("*/5 * * * *", tz="Europe/Paris", kind="report")
            def report(ctx, p):
                pass

            @engine.poller(every=90, kind="poll", misfire="catch_up", max_catch_up=3)
            def poll(ctx, p):
                pass
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    clock = FrozenClock(T0)
    writer = build(clock)
    writer.cron("*/5 * * * *", tz="Europe/Paris", kind="report")(noop)
    writer.fire_schedules()
    clock.advance(5 * MINUTE)
    writer.fire_schedules()
    try:
        result = CliRunner().invoke(cli, ["schedules", "--app", f"{module}:engine", "--db", db_url])
    finally:
        app = sys.modules.pop(module, None)
        if app is not None:
            app.engine.close()
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "name", "kind", "spec", "policies", "last", "slot", "last", "job", "next", "fire"
    ]  # fmt: skip
    rows = {line.split()[0]: line for line in lines[2:]}
    assert "cron */5 * * * * Europe/Paris" in rows["report"]
    assert "misfire skip (grace 1m), overlap skip" in rows["report"]
    assert "2026-01-01 00:05:00" in rows["report"] and "1 (pending)" in rows["report"]
    assert "2026-01-01 00:10:00" in rows["report"]  # next fire
    assert "every 90s" in rows["poll"] and "catch_up (max 3)" in rows["poll"]
    assert "never" in rows["poll"] and "2026-01-01 00:07:30" in rows["poll"]
    described = CliRunner().invoke(cli, ["describe", "--app", f"{module}:engine"])
    kinds = {line.split()[0]: line.split()[1] for line in described.output.splitlines()[2:]}
    assert kinds["report"] == "cron" and kinds["poll"] == "poller", described.output


# -- properties of the pure slot arithmetic ------------------------------------------------

EXPRESSIONS = [
    "*/5 * * * *",
    "30 2 * * *",
    "0 * * * *",
    "15,45 1-3 * * *",
    "0 0 * * 0",
    "* * * * * 30",
]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
INSTANTS = st.datetimes(
    min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
)
# Instants near the 2026 DST changes in the zones above, where the arithmetic is hardest.
DST_EDGES = [
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
    datetime(2026, 3, 8, 7, 0, tzinfo=UTC),
    datetime(2026, 11, 1, 6, 0, tzinfo=UTC),
    datetime(2026, 4, 4, 15, 0, tzinfo=UTC),
    datetime(2026, 10, 3, 15, 30, tzinfo=UTC),
]
NEAR_DST = st.builds(
    lambda edge, minutes: edge + timedelta(minutes=minutes),
    st.sampled_from(DST_EDGES),
    st.integers(-180, 180),
)


@settings(max_examples=300, deadline=None)
@given(
    expr=st.sampled_from(EXPRESSIONS),
    zone=st.sampled_from(ZONES),
    t=st.one_of(INSTANTS, NEAR_DST),
)
def test_cron_slots_are_strictly_increasing_and_consistent(
    expr: str, zone: str, t: datetime
) -> None:
    trigger = CronTrigger(expr, zone)
    latest = trigger.latest(t)
    assert latest is not None and latest <= t
    following = trigger.next_after(latest)
    assert following is not None and following > t  # nothing in between
    chain = [following]
    for _ in range(5):
        nxt = trigger.next_after(chain[-1])
        assert nxt is not None and nxt > chain[-1]
        chain.append(nxt)
    assert all(trigger.latest(slot) == slot for slot in chain)


@settings(max_examples=200, deadline=None)
@given(
    every=st.integers(1, 10**7).map(lambda us: timedelta(microseconds=us * 1000)),
    anchor=INSTANTS,
    t=INSTANTS,
)
def test_interval_slots_are_anchored_multiples(
    every: timedelta, anchor: datetime, t: datetime
) -> None:
    trigger = IntervalTrigger(every, anchor)
    latest = trigger.latest(t)
    assert latest is not None and latest <= t < latest + every
    assert (latest - anchor) % every == timedelta(0)
    assert trigger.next_after(t) == latest + every


@settings(max_examples=200, deadline=None)
@given(
    expr=st.sampled_from(EXPRESSIONS[:5]),
    zone=st.sampled_from(ZONES),
    misfire=st.sampled_from(["skip", "once", "catch_up"]),
    serial=st.booleans(),
    steps=st.lists(st.integers(0, 3 * 3600), min_size=1, max_size=30),
    start=st.one_of(INSTANTS, NEAR_DST),
)
def test_any_tick_sequence_fires_each_slot_at_most_once(
    expr: str, zone: str, misfire: Misfire, serial: bool, steps: list[int], start: datetime
) -> None:
    """Planning from the stored last slot over any ticks: slots fire once, in order, and
    only slots that are due; with once/catch_up the latest due slot is never left unfired."""
    trigger = CronTrigger(expr, zone)
    policy = Policy(misfire, "skip" if serial else "allow", timedelta(seconds=60), 3)
    last = trigger.latest(start)
    now = start
    fired: list[datetime] = []
    for step in steps:
        now += timedelta(seconds=step)
        planned = plan(trigger, policy, last, now)
        assert all(trigger.latest(s) == s and s <= now for s in planned.fire)
        assert last is None or all(s > last for s in planned.fire)
        fired += planned.fire
        if planned.advance_to is not None:
            assert last is None or planned.advance_to > last
            last = planned.advance_to
    assert fired == sorted(set(fired))
    if misfire != "skip" and not (misfire == "catch_up" and serial):
        assert last == trigger.latest(now)


def test_a_half_hour_dst_gap_loses_no_real_slot() -> None:
    """Lord Howe moves its clocks by 30 minutes: gap wall times map (fold=0) onto instants
    that interleave with real ones, and every real matching wall time still fires."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("Australia/Lord_Howe")
    trigger = CronTrigger("*/20 2 * * *", "Australia/Lord_Howe")
    night = datetime(2026, 10, 3, 14, 0, tzinfo=UTC)  # DST starts on Sunday 4 October 2026
    real = [
        moment
        for moment in (night + timedelta(minutes=m) for m in range(240))
        if moment.astimezone(zone).hour == 2 and moment.astimezone(zone).minute % 20 == 0
    ]
    fired, t = [], night
    while (t := trigger.next_after(t)) is not None and t < night + timedelta(hours=4):
        fired.append(t)
    assert set(real) <= set(fired) and fired == sorted(set(fired))
