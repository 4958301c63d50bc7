"""A deploy that renames, splits and removes states while jobs sit in every state of the
old version: with migrations every job ends where they say, each history is a valid path
through the versions it ran under, and nothing runs twice; without them the deploy is
refused by the deploy check and reported by workers, and nothing is lost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta

import pytest

from engine import Engine, FrozenClock
from engine.deploys import check_deploy
from engine.events import Event
from statecharts.paths import versioned_path_errors
from statecharts.versions import version_of
from tests.engine.deploys import deploy_app
from tests.engine.deploys.deploy_app import EFFECTS, build, chart_v1, chart_v2

PARKED = ("validate", "audit", "charge", "pack_and_ship")


@pytest.fixture
def effects() -> Iterator[list[tuple[int, str, str]]]:
    EFFECTS.clear()
    yield EFFECTS
    EFFECTS.clear()


def populate(url: str, clock: FrozenClock) -> tuple[Engine, dict[str, int]]:
    """Jobs in every state of v1: parked in each work state (their handler fails, due
    again in 100 s), waiting in ``hold``, pending, and in each final state."""
    v1 = build("v1", url, clock)
    ids = {state: v1.enqueue("order", {"n": i, "stop_at": state}) for i, state in enumerate(PARKED)}
    ids["succeeded"] = v1.enqueue("order", {"n": 11})
    ids["quarantined"] = v1.enqueue("order", {"n": 12, "permanent": True})
    v1.run_until_idle()
    clock.advance(61)  # out of hold (60 s); the parked ones are due again at 100 s
    v1.run_until_idle()
    ids["hold"] = v1.enqueue("order", {"n": 10, "stop_at": "pack_and_ship"})
    v1.run_until_idle()
    ids["pending"] = v1.enqueue("order", {"n": 13})
    ids["cancelled"] = v1.enqueue("order", {"n": 14})
    v1.cancel(ids["cancelled"])
    states = {name: v1.get(job_id).state for name, job_id in ids.items()}
    assert states == {name: name for name in ids}, states
    return v1, ids


def valid_history(engine: Engine, job_id: int) -> list[str]:
    view = engine.get(job_id)
    charts = {version_of(c): c for c in (chart_v1(), chart_v2(deploy_app.MIGRATIONS))}
    return versioned_path_errors(charts, view.path, view.chart_version)


def test_a_deploy_with_migrations_moves_every_job_where_they_say(
    db_url: str, clock: FrozenClock, effects: list[tuple[int, str, str]]
) -> None:
    v1, ids = populate(db_url, clock)
    v1.close()
    v2 = build("v2", db_url, clock)
    findings = check_deploy(v2.registry, v2.store)
    assert not [f for f in findings if f.severity == "breaking"], findings
    assert {(f.state, f.jobs) for f in findings if f.severity == "migrates"} == {
        ("audit", 1),
        ("hold", 1),
        ("pack_and_ship", 1),
    }
    moved: list[Event] = []
    v2.telemetry.attach(lambda e: moved.append(e) if e.name == "job.migrate" else None)
    for _ in range(6):  # past every retry and timer, under the new version
        clock.advance(100)
        v2.sweep_strays()
        v2.run_until_idle()
    ends = {name: v2.get(job_id).state for name, job_id in ids.items()}
    assert ends == {
        **{name: "succeeded" for name in ids},
        "quarantined": "quarantined",
        "cancelled": "cancelled",
    }
    migrated = {e.fields["job_id"]: (e.fields["from_state"], e.fields["to_state"]) for e in moved}
    assert migrated == {
        ids["audit"]: ("audit", "charge"),
        ids["hold"]: ("hold", "cool_off"),
        ids["pack_and_ship"]: ("pack_and_ship", "pack"),
    }
    for name, job_id in ids.items():
        assert valid_history(v2, job_id) == [], name
    # Nothing ran twice: each job's work happened once per step, whichever version ran it.
    twice = [k for k, n in Counter((job, state) for job, state, _ in effects).items() if n > 1]
    assert twice == []
    charged = {job for job, state, _ in effects if state == "charge"}
    assert charged == {
        ids[name]
        for name in ("validate", "audit", "charge", "pack_and_ship", "hold", "succeeded", "pending")
    }
    # The version each job's last move was made under, and the versions recorded.
    version = version_of(chart_v2(deploy_app.MIGRATIONS))
    assert v2.get(ids["pending"]).chart_version == version
    assert v2.get(ids["succeeded"]).chart_version == version_of(chart_v1())
    assert set(v2.store.chart_versions_of("order")) == {version_of(chart_v1()), version}
    v2.close()


def test_the_same_deploy_without_migrations_is_refused_and_loses_nothing(
    db_url: str, clock: FrozenClock, effects: list[tuple[int, str, str]]
) -> None:
    v1, ids = populate(db_url, clock)
    v1.close()
    bare = build("v2", db_url, clock, migrations=False)
    breaking = {
        (f.state, f.jobs)
        for f in check_deploy(bare.registry, bare.store)
        if f.severity == "breaking"
    }
    assert breaking == {("audit", 1), ("hold", 1), ("pack_and_ship", 1)}
    reports: list[Event] = []
    bare.telemetry.attach(lambda e: reports.append(e) if e.name == "jobs.stranded" else None)
    for _ in range(6):
        clock.advance(100)
        bare.sweep_strays()
        bare.run_until_idle()
    stranded = {name: bare.get(ids[name]) for name in ("audit", "hold", "pack_and_ship")}
    assert {name: view.state for name, view in stranded.items()} == {
        "audit": "audit",
        "hold": "hold",
        "pack_and_ship": "pack_and_ship",
    }
    assert all(view.chart_version == version_of(chart_v1()) for view in stranded.values())
    assert reports and reports[-1].fields["jobs"] == 3
    assert bare.get(ids["charge"]).state == "succeeded"  # the others went on
    bare.close()
    # The fix: deploy the migrations; the stranded jobs finish, nothing ran twice.
    v2 = build("v2", db_url, clock)
    for _ in range(4):
        clock.advance(100)
        v2.sweep_strays()
        v2.run_until_idle()
    assert {v2.get(ids[name]).state for name in stranded} == {"succeeded"}
    twice = [k for k, n in Counter((job, state) for job, state, _ in effects).items() if n > 1]
    assert twice == []
    v2.close()


def test_a_rolling_deploy_hands_jobs_back_and_forth_with_valid_histories(
    db_url: str, clock: FrozenClock, effects: list[tuple[int, str, str]]
) -> None:
    """Old and new workers side by side: a job enqueued by the old app runs on the new
    one, and the switch is recorded in the move that made it."""
    v1 = build("v1", db_url, clock)
    v2 = build("v2", db_url, clock)
    job = v1.enqueue("order", {"n": 1})
    v2.run_until_idle()  # validate under v2 -> charge
    start = v2.get(job).history[1]
    assert start.trigger == "start"
    assert start.detail == {
        "chart_version": [version_of(chart_v1()), v2.registry.get("order").version]
    }
    clock.advance(100)
    v2.run_until_idle()
    clock.advance(100)
    v2.run_until_idle()
    assert v2.get(job).state == "succeeded"
    assert valid_history(v2, job) == []
    v1.close()
    v2.close()


def test_a_migration_must_land_where_jobs_wait() -> None:
    """The lifecycle's 'running' is entered only by a claim: a migrated job left there
    would hold no lease and never be picked up, so the registration is refused."""
    from dataclasses import replace

    from engine import Invariant, RegistrationError
    from statecharts import lifecycle
    from statecharts.chart import Migration

    engine = Engine("sqlite://")
    chart = replace(lifecycle(), migrations=(Migration("old", "running"),))
    with pytest.raises(RegistrationError, match="lands where no job waits"):
        engine.job(kind="x", chart=chart, idempotency=Invariant("test"))(lambda ctx, p: None)
    chart = replace(lifecycle(), migrations=(Migration("old", "retry_wait"),))
    engine.job(kind="y", chart=chart, idempotency=Invariant("test"))(lambda ctx, p: None)
    assert "old" in engine.registry.get("y").claim_states


@pytest.mark.parametrize("keep_due", [False, True])
def test_a_migrated_wait_restarts_its_timer_unless_it_keeps_its_due_time(
    db_url: str, clock: FrozenClock, keep_due: bool, effects: list[tuple[int, str, str]]
) -> None:
    from statecharts import Migration

    v1 = build("v1", db_url, clock)
    job = v1.enqueue("order", {"n": 1})
    v1.run_until_idle()
    due = v1.get(job).due_at
    assert v1.get(job).state == "hold" and due is not None
    v1.close()
    clock.advance(50)  # 50 of its 60 s waited
    v2 = build("v2", db_url, clock, migrations=[Migration("hold", "cool_off", keep_due=keep_due)])
    v2.sweep_strays()
    view = v2.get(job)
    assert view.state == "cool_off"
    expected = due if keep_due else clock.now() + timedelta(seconds=60)
    assert view.due_at == expected
    v2.close()


def test_a_state_that_changes_kind_under_its_jobs_is_breaking(
    db_url: str, clock: FrozenClock, effects: list[tuple[int, str, str]]
) -> None:
    """v1's work state 'charge' becomes a wait state of the same name: its jobs would have
    their charge skipped by the timer, so the deploy check refuses it."""
    v1 = build("v1", db_url, clock)
    job = v1.enqueue("order", {"n": 1, "stop_at": "charge"})
    v1.run_until_idle()
    assert v1.get(job).state == "charge"
    v1.record_versions()
    v1.close()
    changed = Engine(db_url, clock=clock)
    chart = deploy_app.flow(
        "order",
        deploy_app.Work("validate", on={"ok": "charge"}),
        deploy_app.Wait("charge", delay=1, then="ship"),
        deploy_app.Work("ship", on={"shipped": "succeeded"}),
    )
    handlers = {"validate": lambda ctx, o: "ok", "ship": lambda ctx, o: "shipped"}
    changed.flow(
        "order", chart, handlers, payload=deploy_app.Order, idempotency=lambda o: f"o:{o.n}"
    )
    breaking = [
        f for f in check_deploy(changed.registry, changed.store) if f.severity == "breaking"
    ]
    assert [(f.state, f.jobs) for f in breaking] == [("charge", 1)]
    assert "was a work state and is a wait state" in breaking[0].message
    changed.close()


def test_diff_against_the_recorded_version_counts_the_jobs_in_flight(
    db_url: str, clock: FrozenClock, effects: list[tuple[int, str, str]]
) -> None:
    """`jobcharts diff --db`: the new chart against the version the database recorded,
    with the jobs in flight in each removed state and the migrations that will move them."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    v1, _ = populate(db_url, clock)
    v1.record_versions()
    v1.close()
    root = Path(__file__).resolve().parents[3]
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHARTS_")}
    env["PYTHONPATH"] = str(root)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "diff",
            "order",
            "--app",
            "tests.engine.deploys.deploy_app:v2",
            "--db",
            db_url,
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=120,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert "- state audit (1 job(s) in flight)" in lines
    assert "- state hold (1 job(s) in flight)" in lines
    assert "-> migrate pack_and_ship => pack (1 job(s) in flight)" in lines
