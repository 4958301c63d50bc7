"""Kinds owned once: a second app registering the same kind with another payload model is
refused at worker start, naming both, instead of quarantining the first app's jobs; a
compatible change (checked on the payloads in flight) or a declared one is accepted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import Worker
from engine.events import Event
from engine.kinds import KindConflict
from tests.engine.deploys import kinds_app_a, kinds_app_b

ROOT = Path(__file__).resolve().parents[3]


def test_another_apps_kind_is_refused_and_its_jobs_left_alone(db_url: str) -> None:
    a = kinds_app_a.build(db_url)
    a.own_kinds()
    job_id = a.enqueue("notify", {"email": "ada@example.com"})
    b = kinds_app_b.build(db_url)
    with pytest.raises(KindConflict) as refused:
        Worker(b, concurrency=1).run(until_idle=True)
    message = str(refused.value)
    assert "tests.engine.deploys.kinds_app_a" in message
    assert "tests.engine.deploys.kinds_app_b" in message
    assert "{email: string}" in message and "{phone: string}" in message
    assert "1 job(s) of it are in flight" in message
    assert a.get(job_id).state == "pending" and a.get(job_id).attempt == 0
    a.close()
    b.close()


def test_a_compatible_change_is_checked_on_the_payloads_and_accepted(db_url: str) -> None:
    a = kinds_app_a.build(db_url)
    a.own_kinds()
    job_id = a.enqueue("notify", {"email": "ada@example.com"})
    a.close()
    b = kinds_app_b.build(db_url, model=kinds_app_b.EmailV2)
    seen: list[Event] = []
    b.telemetry.attach(lambda e: seen.append(e) if e.name == "kind.schema_changed" else None)
    Worker(b, concurrency=1).run(until_idle=True)
    assert b.get(job_id).state == "succeeded"
    assert [e.fields["why"] for e in seen] == [
        "all 1 payload(s) in flight validate under the new model"
    ]
    b.close()


def test_a_declared_change_is_accepted_and_unfit_jobs_quarantine(db_url: str) -> None:
    a = kinds_app_a.build(db_url)
    a.own_kinds()
    job_id = a.enqueue("notify", {"email": "ada@example.com"})
    a.close()
    b = kinds_app_b.build(db_url, schema_change="email notifications are retired")
    Worker(b, concurrency=1).run(until_idle=True)
    view = b.get(job_id)
    assert (view.state, view.quarantine_reason) == ("quarantined", "invalid_payload")
    b.close()


def test_with_nothing_in_flight_the_new_owner_takes_the_kind(db_url: str) -> None:
    a = kinds_app_a.build(db_url)
    a.own_kinds()
    a.close()
    b = kinds_app_b.build(db_url)
    assert b.own_kinds()[0].why == "no job of the kind is in flight"
    assert b.store.kind_records(["notify"])["notify"].app == "tests.engine.deploys.kinds_app_b"
    b.close()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHARTS_")}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "engine.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


def test_the_command_line_refuses_in_one_line(db_url: str) -> None:
    a = kinds_app_a.build(db_url)
    a.own_kinds()
    a.enqueue("notify", {"email": "ada@example.com"})
    a.close()
    app_b = "tests.engine.deploys.kinds_app_b:app"
    worker = run("worker", "--until-idle", "--app", app_b, "--db", db_url)
    assert worker.returncode == 1
    errors = [line for line in worker.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "is registered by another app" in errors[0], worker.stderr
    check = run("check", "--app", app_b, "--db", db_url)
    assert check.returncode == 1 and "BREAKING" in check.stdout, check.stdout + check.stderr


def test_enqueueing_another_apps_kind_is_refused(db_url: str) -> None:
    """App B's enqueue would be deduped against app A's jobs (same kind, same key space)
    and run by A's workers with B's payload: refused, nothing stored."""
    a = kinds_app_a.build(db_url)
    a.own_kinds()
    a.enqueue("notify", {"email": "ada@example.com"})
    b = kinds_app_b.build(db_url)
    with pytest.raises(KindConflict, match="belongs to another app"):
        b.enqueue("notify", {"phone": "+331234"})
    assert len(a.store.job_list()) == 1
    a.enqueue("notify", {"email": "bob@example.com"})  # the owner itself goes on
    assert len(a.store.job_list()) == 2
    a.close()
    b.close()
