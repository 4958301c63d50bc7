"""Rows the running chart cannot take are never claimed blindly nor ignored: set aside
with a reason when no deploy can fix them, reported stranded when one can, and every
operator command works on them and explains instead of crashing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from engine import Engine, FrozenClock, TransitionNotAllowed
from engine.events import Event
from engine.store.schema import jobs
from engine.view import stray_note
from statecharts.paths import versioned_path_errors
from statecharts.versions import version_of
from tests.engine.deploys.deploy_app import build, chart_v1

ROOT = Path(__file__).resolve().parents[3]
APP = "tests.engine.deploys.deploy_app"


def edit(engine: Engine, job_id: int, **values: Any) -> None:
    """Change a job row by hand (what an operator's SQL or a bad restore does)."""
    with engine.store.write() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(**values))


def edit_raw(engine: Engine, job_id: int, column: str, text: str) -> None:
    """Write text the column's type would refuse (SQLite keeps whatever it is given)."""
    with engine.store.write() as conn:
        conn.exec_driver_sql(f"UPDATE jobs SET {column} = ? WHERE id = ?", (text, job_id))


def events(engine: Engine, name: str) -> list[Event]:
    seen: list[Event] = []
    engine.telemetry.attach(lambda e: seen.append(e) if e.name == name else None)
    return seen


def test_a_state_its_own_version_never_had_is_set_aside(db_url: str, clock: FrozenClock) -> None:
    """Due or not, a hand-written state under the row's own chart version is quarantined
    (unknown_state) by the sweep, its history saying so; the other jobs run on."""
    engine = build("v1", db_url, clock)
    due, later, fine = (engine.enqueue("order", {"n": n}) for n in (1, 2, 3))
    edit(engine, due, state="bogus")
    edit(engine, later, state="bogus", due_at=clock.now().replace(year=2030))
    aside = events(engine, "job.set_aside")
    engine.run_until_idle()  # a claim selects only states it can start or time: not these
    assert engine.get(due).state == engine.get(later).state == "bogus"
    engine.sweep_strays()  # what every worker runs at start and every minute
    for job_id in (due, later):
        view = engine.get(job_id)
        assert (view.state, view.quarantine_reason) == ("quarantined", "unknown_state")
        assert view.last_error is not None and "bogus" in view.last_error.message
        assert view.history[-1].trigger == "set_aside"
    assert {e.fields["job_id"] for e in aside} == {due, later}
    assert all(e.level == "error" for e in aside)
    assert engine.get(fine).state == "hold"
    engine.close()


def test_more_attempts_than_the_budget_is_set_aside_not_run(
    db_url: str, clock: FrozenClock
) -> None:
    """A row at attempt 99 of 5 is never started as attempt 100."""
    engine = build("v1", db_url, clock)
    pending, in_step = engine.enqueue("order", {"n": 1}), engine.enqueue("order", {"n": 2})
    edit(engine, pending, attempt=99)
    edit(engine, in_step, state="charge", attempt=7, max_attempts=5)
    engine.run_until_idle()
    for job_id in (pending, in_step):
        view = engine.get(job_id)
        assert (view.state, view.quarantine_reason) == ("quarantined", "attempts_exceeded")
        assert [e.trigger for e in view.history if e.trigger == "start"] == []
    engine.close()


def test_a_waiting_row_with_no_due_time_is_set_aside(db_url: str, clock: FrozenClock) -> None:
    engine = build("v1", db_url, clock)
    job_id = engine.enqueue("order", {"n": 1})
    edit(engine, job_id, due_at=None)
    assert stray_note(engine, job_id) is not None
    engine.sweep_strays()
    assert engine.get(job_id).quarantine_reason == "corrupt_row"
    engine.close()


def test_a_timestamp_that_no_longer_parses_fails_only_its_row(
    sqlite_only: None, db_url: str, clock: FrozenClock
) -> None:
    """SQLite keeps any text: the listing and inspect still read the row, the claim sets
    it aside (corrupt_row) and claims the others as usual."""
    engine = build("v1", db_url, clock)
    bad, good = engine.enqueue("order", {"n": 1}), engine.enqueue("order", {"n": 2})
    edit_raw(engine, bad, "due_at", "not a time")
    edit_raw(engine, good, "created_at", "nor this")  # harmless to running it
    rows = engine.store.job_list()
    assert {r.id for r in rows} == {bad, good}
    assert "corrupt_row" in (stray_note(engine, bad) or "")
    engine.run_until_idle()
    engine.sweep_strays()
    view = engine.get(bad)
    assert (view.state, view.quarantine_reason) == ("quarantined", "corrupt_row")
    assert view.last_error is not None and "'not a time'" in view.last_error.message
    assert engine.get(good).state == "hold"
    engine.close()


def test_operators_cancel_and_requeue_a_job_off_its_chart(db_url: str, clock: FrozenClock) -> None:
    """A job stranded in a state a deploy removed: cancel ends it, requeue starts it over
    on the running version; both recorded as operator moves off the chart."""
    v1 = build("v1", db_url, clock)
    job_id = v1.enqueue("order", {"n": 1, "stop_at": "audit"})
    v1.run_until_idle()
    assert v1.get(job_id).state == "audit"
    v1.close()
    v2 = build("v2", db_url, clock, migrations=False)
    assert "stranded" in (stray_note(v2, job_id) or "")
    assert v2.cancel(job_id) == "cancelled"
    assert v2.get(job_id).history[-1].detail["off_chart"].startswith("from state 'audit'")
    v2.requeue(job_id)
    clock.advance(100)
    v2.run_until_idle()
    clock.advance(100)
    v2.run_until_idle()
    view = v2.get(job_id)
    assert view.state == "succeeded"
    charts = {
        version_of(chart_v1()): chart_v1(),
        view.chart_version: v2.registry.get("order").chart,
    }
    assert versioned_path_errors(charts, view.path, view.chart_version) == []
    v2.close()


def test_cancel_of_a_stray_a_worker_still_holds_is_refused_with_the_reason(
    db_url: str, clock: FrozenClock
) -> None:
    v1 = build("v1", db_url, clock)
    job_id = v1.enqueue("order", {"n": 1})
    v1.claim(clock.now(), 1)  # an old worker holds it (in 'validate' of v1)
    edit(v1, job_id, state="audit")
    v1.close()
    v2 = build("v2", db_url, clock, migrations=False)
    with pytest.raises(TransitionNotAllowed, match=r"a worker .* holds it until"):
        v2.cancel(job_id)
    v2.close()


def jobcharts(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def test_a_deploy_without_migrations_from_the_command_line(db_url: str) -> None:
    """check --db refuses it (exit 1, counts), --until-idle exits and reports the stranded
    job, jobs --stranded and inspect explain it; migrate-jobs applies the declared fix."""
    v1 = build("v1", db_url)
    job_id = v1.enqueue("order", {"n": 1, "stop_at": "audit"})
    v1.run_until_idle()
    v1.close()
    check = jobcharts("check", "--app", f"{APP}:v2_without_migrations", "--db", db_url)
    assert check.returncode == 1, check.stdout + check.stderr
    assert "BREAKING" in check.stdout and "1 job(s) of 'order' in 'audit'" in check.stdout
    assert "would be stranded" in check.stderr
    worker = jobcharts(
        "worker", "--until-idle", "--app", f"{APP}:v2_without_migrations", "--db", db_url
    )
    assert worker.returncode == 0, worker.stderr
    assert "jobs.stranded" in worker.stdout + worker.stderr
    listed = jobcharts(
        "jobs", "--stranded", "--app", f"{APP}:v2_without_migrations", "--db", db_url
    )
    assert listed.returncode == 0 and f"{job_id} " in listed.stdout and "stranded" in listed.stdout
    inspect = jobcharts(
        "inspect", str(job_id), "--app", f"{APP}:v2_without_migrations", "--db", db_url
    )
    assert inspect.returncode == 0 and "stranded, left as it is" in inspect.stdout
    assert jobcharts("check", "--app", f"{APP}:v2", "--db", db_url).returncode == 0
    dry = jobcharts("migrate-jobs", "--app", f"{APP}:v2", "--db", db_url)
    assert dry.returncode == 0 and "dry run" in dry.stdout and "charge" in dry.stdout
    applied = jobcharts("migrate-jobs", "--yes", "--app", f"{APP}:v2", "--db", db_url)
    assert applied.returncode == 0 and "migrated 1" in applied.stdout, applied.stderr
    engine = build("v2", db_url)
    assert engine.get(job_id).state == "charge"
    engine.close()


def test_render_draws_a_job_on_its_own_chart_version(db_url: str) -> None:
    """A job stranded by a deploy is drawn on the version it ran under (recorded in the
    database), with its path: the new app's chart has no 'audit' to draw it in."""
    v1 = build("v1", db_url)
    job_id = v1.enqueue("order", {"n": 1, "stop_at": "audit"})
    v1.run_until_idle()
    v1.close()
    app = f"{APP}:v2_without_migrations"
    drawn = jobcharts("render", "--job", str(job_id), "--app", app, "--db", db_url)
    assert drawn.returncode == 0, drawn.stderr
    dot = drawn.stdout
    assert f"job {job_id}, version {version_of(chart_v1())} v1" in dot
    assert "audit" in dot and "pack_and_ship" in dot and "cool_off" not in dot
    assert "(1 job)" in dot  # where it is now
    missing = jobcharts("render", "--job", "999", "--app", app, "--db", db_url)
    assert missing.returncode == 1 and "no job with id 999" in missing.stderr
