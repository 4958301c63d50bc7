"""The ``jobcharts`` CLI end to end on real SQLite files (in process, and as a subprocess)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

from engine import Engine
from engine.cli import cli
from tests.engine import cli_app

APP = "tests.engine.cli_app:engine"
ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ("did it run", "did it succeed", "why did it fail", "will it retry")

Invoke = Callable[..., Result]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Keep each test's CLI runs from leaking state into the next test (or the test run).

    The app module is imported once per process, so its Engine keeps the store of the first
    ``--db`` it saw; the ``worker`` command installs SIGINT/SIGTERM handlers and the group
    configures structlog onto CliRunner's captured stderr. Undo all three afterwards.
    """
    monkeypatch.delenv("JOBCHARTS_DB", raising=False)
    monkeypatch.delenv("JOBCHARTS_APP", raising=False)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    cli_app.engine.close()
    yield
    cli_app.engine.close()
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    structlog.reset_defaults()


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'x.db'}"


@pytest.fixture
def run(url: str) -> Invoke:
    """Invoke the CLI in process with ``--app`` and ``--db`` appended (unless turned off)."""

    def invoke(*args: str, app: bool = True, db: bool = True) -> Result:
        argv = list(args)
        if app:
            argv += ["--app", APP]
        if db:
            argv += ["--db", url]
        return CliRunner().invoke(cli, argv)

    return invoke


@pytest.fixture
def reader(url: str) -> Iterator[Engine]:
    """A separate engine on the same file, to check what the CLI stored."""
    eng = Engine(url)
    yield eng
    eng.close()


def ok(result: Result) -> str:
    """The stdout of a run that must have succeeded (shows everything when it did not)."""
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def failed(result: Result) -> str:
    """The combined output of a run that must have failed cleanly (a message, no traceback)."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), (
        f"crashed instead of a clean error: {result.exception!r}\n{result.output}"
    )
    return result.output


def enqueue(run: Invoke, kind: str, payload: dict[str, object], *extra: str) -> int:
    return int(ok(run("enqueue", kind, json.dumps(payload), *extra)).strip())


def listed_ids(output: str) -> list[int]:
    """Job ids in the first column of ``jobs`` output's table."""
    lines = output.splitlines()
    body = lines[2:]  # header, dashes
    return [int(line.split()[0]) for line in body if line and line.split()[0].isdigit()]


def answers(output: str) -> dict[str, str]:
    """The four questions and their answers from ``inspect`` text output."""
    found = {}
    for line in output.splitlines():
        match = re.match(
            r"^\s+(did it run|did it succeed|why did it fail|will it retry)\?\s+(.*)$", line
        )
        if match:
            found[match.group(1)] = match.group(2)
    return found


# -- help and enqueue --------------------------------------------------------------------


def test_help_lists_every_command(run: Invoke) -> None:
    """``jobcharts --help`` lists worker, enqueue, jobs, inspect, requeue, cancel and demo."""
    out = ok(run("--help", app=False, db=False))
    commands = out.split("Commands:", 1)[1]
    listed = {line.split()[0] for line in commands.splitlines() if line.strip()}
    assert {"worker", "enqueue", "jobs", "inspect", "requeue", "cancel", "demo"} <= listed


def test_enqueue_prints_an_id_and_the_same_id_for_a_duplicate(run: Invoke, reader: Engine) -> None:
    """Enqueuing prints the new job's id, and the same payload again prints that same id."""
    first = enqueue(run, "ship", {"order_id": 7})
    other = enqueue(run, "ship", {"order_id": 8})
    again = enqueue(run, "ship", {"order_id": 7})
    assert again == first
    assert other != first
    assert sorted(r.id for r in reader.store.job_list()) == sorted([first, other])
    assert reader.get(first).payload == {"order_id": 7, "note": ""}


def test_enqueue_invalid_json_exits_nonzero_and_stores_nothing(run: Invoke, reader: Engine) -> None:
    """A payload that is not JSON is a usage error naming PAYLOAD, and no job is stored."""
    out = failed(run("enqueue", "ship", "{order_id: 1"))
    assert "PAYLOAD" in out
    assert "not JSON" in out
    assert reader.store.job_list() == []


def test_enqueue_invalid_payload_exits_nonzero_and_stores_nothing(
    run: Invoke, reader: Engine
) -> None:
    """A payload failing the kind's pydantic model is refused with pydantic's message."""
    out = failed(run("enqueue", "ship", json.dumps({"order_id": "seven"})))
    assert "invalid payload for 'ship'" in out
    assert "nothing stored" in out
    assert "order_id" in out
    failed(run("enqueue", "ship", json.dumps({"order_id": 0})))  # violates ge=1
    failed(run("enqueue", "ship", "[1, 2]"))  # JSON, but not an object
    assert reader.store.job_list() == []
    assert "no jobs" in ok(run("jobs"))


def test_enqueue_unknown_kind_exits_nonzero_naming_the_kind(run: Invoke, reader: Engine) -> None:
    """Enqueuing an unregistered kind names it (and the registered ones) and stores nothing."""
    out = failed(run("enqueue", "send_fax", "{}"))
    assert "send_fax" in out
    assert "ship" in out  # the registered kinds are listed to help fix a typo
    assert reader.store.job_list() == []


def test_enqueue_negative_delay_is_a_clean_error(run: Invoke, reader: Engine) -> None:
    """A negative ``--delay`` is refused with a message, not a traceback, and stores nothing."""
    out = failed(run("enqueue", "ship", json.dumps({"order_id": 1}), "--delay", "-1"))
    assert "delay" in out
    assert reader.store.job_list() == []


def test_enqueue_with_delay_is_not_run_before_it_is_due(run: Invoke, reader: Engine) -> None:
    """A job enqueued with ``--delay`` stays pending through a worker tick before it is due."""
    later = enqueue(run, "ship", {"order_id": 1}, "--delay", "3600")
    now = enqueue(run, "ship", {"order_id": 2})
    ok(run("worker", "-c", "1", "--max-ticks", "2", "--poll", "0.01"))
    assert reader.get(now).state == "succeeded"
    assert reader.get(later).state == "pending"


# -- worker, jobs, inspect ---------------------------------------------------------------


def test_worker_runs_jobs_to_their_states_and_jobs_lists_them(run: Invoke, reader: Engine) -> None:
    """``worker --until-idle`` runs each kind to its state; ``jobs --state`` filters by it."""
    shipped = [enqueue(run, "ship", {"order_id": n}) for n in (1, 2)]
    rejected = enqueue(run, "reject", {"address": "nowhere"})
    failing = enqueue(run, "always_fails", {"order_id": 3})

    out = ok(run("worker", "--until-idle", "--poll", "0.01"))
    assert "worker stopped: claimed 5, succeeded 2, retried 1, quarantined 2" in out

    assert [reader.get(i).state for i in shipped] == ["succeeded", "succeeded"]
    assert reader.get(rejected).quarantine_reason == "permanent"
    exhausted = reader.get(failing)
    assert (exhausted.state, exhausted.quarantine_reason, exhausted.attempt) == (
        "quarantined",
        "exhausted",
        2,
    )

    listing = ok(run("jobs", "--state", "succeeded"))
    assert sorted(listed_ids(listing)) == sorted(shipped)
    assert "quarantined: 2" in listing
    assert "succeeded: 2" in listing
    quarantined = ok(run("jobs", "--state", "quarantined"))
    assert sorted(listed_ids(quarantined)) == sorted([rejected, failing])
    assert "permanent" in quarantined
    assert "exhausted" in quarantined
    assert listed_ids(ok(run("jobs", "--kind", "reject"))) == [rejected]


def test_jobs_and_inspect_work_without_app(run: Invoke) -> None:
    """``jobs`` and ``inspect`` need only ``--db``: the built-in lifecycle explains the job."""
    job = enqueue(run, "ship", {"order_id": 1})
    ok(run("worker", "--max-ticks", "1", "--poll", "0.01"))
    assert listed_ids(ok(run("jobs", app=False))) == [job]
    found = answers(ok(run("inspect", str(job), app=False)))
    assert found["did it succeed"].startswith("Yes")


def test_inspect_answers_for_a_succeeded_job(run: Invoke) -> None:
    """``inspect`` of a succeeded job says it ran, succeeded, never failed, won't retry."""
    job = enqueue(run, "ship", {"order_id": 1})
    ok(run("worker", "--max-ticks", "1", "--poll", "0.01"))
    out = ok(run("inspect", str(job)))
    assert out.splitlines()[0] == f"job {job} (ship, chart lifecycle): succeeded"
    found = answers(out)
    assert set(found) == set(QUESTIONS)
    assert found["did it run"].startswith("Yes")
    assert found["did it succeed"].startswith("Yes")
    assert "not failed" in found["why did it fail"]
    assert found["will it retry"].startswith("No")
    assert "idempotency key   ship:1" in out
    assert re.search(r"succeed\s+running\s+succeeded", out)  # the history table
    assert "last traceback" not in out


def test_inspect_answers_for_a_quarantined_job(run: Invoke) -> None:
    """``inspect`` of a Permanent failure gives the error, the reason and how to requeue."""
    job = enqueue(run, "reject", {"address": "nowhere"})
    ok(run("worker", "--max-ticks", "1", "--poll", "0.01"))
    out = ok(run("inspect", str(job)))
    found = answers(out)
    assert found["did it run"].startswith("Yes")
    assert found["did it succeed"].startswith("No")
    assert "quarantined" in found["did it succeed"]
    assert "Permanent" in found["why did it fail"]
    assert "'nowhere' is not a deliverable address" in found["why did it fail"]
    assert "permanent error" in found["why did it fail"]
    assert found["will it retry"].startswith("No")
    assert "requeue" in found["will it retry"]
    assert "last traceback:" in out
    assert "raise Permanent" in out


def test_inspect_answers_for_a_job_waiting_to_retry(run: Invoke) -> None:
    """``inspect`` of a retry_wait job says not yet, why it failed, and when attempt 2 runs."""
    job = enqueue(run, "always_fails", {"order_id": 3})
    ok(run("worker", "--max-ticks", "1", "--poll", "0.01"))
    out = ok(run("inspect", str(job)))
    assert out.splitlines()[0].endswith(": retry_wait")
    found = answers(out)
    assert found["did it run"].startswith("Yes")
    assert found["did it succeed"].startswith("Not yet")
    assert "ConnectionError: upstream down for order 3" in found["why did it fail"]
    assert "quarantined" not in found["why did it fail"]
    retry = found["will it retry"]
    assert retry.startswith("Yes")
    assert "attempt 2 of 2" in retry
    assert "1 attempt(s) left" in retry


def test_inspect_answers_for_a_pending_job(run: Invoke) -> None:
    """``inspect`` of a job no worker has touched says it has not started and when it is due."""
    job = enqueue(run, "ship", {"order_id": 1})
    found = answers(ok(run("inspect", str(job))))
    assert found["did it run"].startswith("No")
    assert found["did it succeed"].startswith("Not yet")
    assert "due" in found["will it retry"]


def test_inspect_json_parses_and_matches_the_job(run: Invoke) -> None:
    """``inspect --json`` is valid JSON with the state, the four answers and the history."""
    job = enqueue(run, "always_fails", {"order_id": 3})
    ok(run("worker", "-c", "1", "--max-ticks", "2", "--poll", "0.01"))
    data = json.loads(ok(run("inspect", str(job), "--json")))
    assert data["id"] == job
    assert data["kind"] == "always_fails"
    assert data["state"] == "quarantined"
    assert data["quarantine_reason"] == "exhausted"
    assert (data["attempt"], data["max_attempts"]) == (2, 2)
    assert data["last_error"]["error_class"] == "ConnectionError"
    assert set(data["answers"]) == set(QUESTIONS)
    assert data["answers"]["did it succeed"].startswith("No")
    triggers = [e["trigger"] for e in data["history"]]
    assert triggers == ["enqueue", "start", "fail", "start", "fail"]
    assert data["history"][-1]["to_state"] == "quarantined"


def test_inspect_unknown_job_exits_nonzero(run: Invoke, reader: Engine) -> None:
    """``inspect`` of an id that does not exist says so and exits non-zero."""
    reader.store  # the database exists, the job does not  # noqa: B018
    out = failed(run("inspect", "4242"))
    assert "no job with id 4242" in out


# -- operators ---------------------------------------------------------------------------


def test_requeue_moves_a_quarantined_job_to_pending_once(run: Invoke, reader: Engine) -> None:
    """``requeue`` gives a quarantined job a fresh run; requeueing it while pending is refused."""
    job = enqueue(run, "reject", {"address": "nowhere"})
    ok(run("worker", "--max-ticks", "1", "--poll", "0.01"))
    assert reader.get(job).state == "quarantined"

    assert f"job {job} requeued" in ok(run("requeue", str(job)))
    view = reader.get(job)
    assert (view.state, view.attempt, view.quarantine_reason) == ("pending", 0, None)
    assert view.history[-1].trigger == "requeue"

    out = failed(run("requeue", str(job)))
    assert f"job {job}" in out
    assert "'pending'" in out  # says why: the state it is in ...
    assert "quarantined" in out  # ... and which states requeue applies to
    assert reader.get(job).state == "pending"

    ok(run("worker", "--max-ticks", "1", "--poll", "0.01"))  # the fresh run fails again
    assert reader.get(job).state == "quarantined"


def test_requeue_unknown_job_exits_nonzero(run: Invoke, reader: Engine) -> None:
    """``requeue`` of an id that does not exist says so and exits non-zero."""
    reader.store  # the database exists, the job does not  # noqa: B018
    assert "no job with id 99" in failed(run("requeue", "99"))


def test_cancel_pending_job_is_never_run(run: Invoke, reader: Engine) -> None:
    """``cancel`` moves a pending job to cancelled, the worker skips it, a second cancel fails."""
    job = enqueue(run, "ship", {"order_id": 1})
    assert f"job {job} cancelled" in ok(run("cancel", str(job)))
    ok(run("worker", "--max-ticks", "1", "--poll", "0.01"))
    view = reader.get(job)
    assert view.state == "cancelled"
    assert view.attempt == 0

    out = failed(run("cancel", str(job)))
    assert "'cancelled'" in out
    assert reader.get(job).state == "cancelled"


def test_cancel_a_job_waiting_to_retry(run: Invoke, reader: Engine) -> None:
    """``cancel`` of a retry_wait job stops its retries; it stays cancelled after more ticks."""
    job = enqueue(run, "always_fails", {"order_id": 3})
    ok(run("worker", "--max-ticks", "1", "--poll", "0.01"))
    assert reader.get(job).state == "retry_wait"
    ok(run("cancel", str(job)))
    ok(run("worker", "-c", "1", "--max-ticks", "2", "--poll", "0.01"))
    view = reader.get(job)
    assert (view.state, view.attempt) == ("cancelled", 1)


def test_cancel_a_finished_job_is_refused(run: Invoke, reader: Engine) -> None:
    """``cancel`` of a succeeded job exits non-zero and leaves it succeeded."""
    job = enqueue(run, "ship", {"order_id": 1})
    ok(run("worker", "--max-ticks", "1", "--poll", "0.01"))
    out = failed(run("cancel", str(job)))
    assert "'succeeded'" in out
    assert reader.get(job).state == "succeeded"


# -- app loading -------------------------------------------------------------------------


def test_worker_requires_app(run: Invoke) -> None:
    """``worker`` without ``--app`` is a usage error that names the option."""
    assert "--app" in failed(run("worker", "--max-ticks", "1", app=False))


def test_bad_app_spec_is_a_clean_error(url: str) -> None:
    """An unimportable module, or an attribute that is not an Engine, is reported clearly."""
    out = failed(
        CliRunner().invoke(cli, ["jobs", "--app", "tests.engine.no_such_app", "--db", url])
    )
    assert "tests.engine.no_such_app" in out
    spec = "tests.engine.cli_app:TWO_QUICK_TRIES"
    out = failed(CliRunner().invoke(cli, ["jobs", "--app", spec, "--db", url]))
    assert "not a jobcharts Engine" in out
    assert "RetryPolicy" in out


def test_app_spec_naming_a_class_is_a_clean_error(url: str) -> None:
    """``--app module:SomeModel`` (callable, but no Engine factory) is a clean --app error."""
    spec = "tests.engine.cli_app:Order"
    out = failed(CliRunner().invoke(cli, ["jobs", "--app", spec, "--db", url]))
    assert "--app" in out


# -- demo --------------------------------------------------------------------------------


def test_demo_runs_and_prints_its_table(tmp_path: Path, run: Invoke) -> None:
    """``demo`` exits 0 and prints succeeded and quarantined rows and the dedupe summary."""
    demo_url = f"sqlite:///{tmp_path / 'demo.db'}"
    out = ok(run("demo", "--db", demo_url, app=False, db=False))
    assert demo_url in out
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    states = {row[2] for row in rows}
    assert {"succeeded", "quarantined"} <= states
    assert re.search(r"11 enqueues -> 10 jobs \(1 deduplicated\)", out)
    assert "not_shipped" in states and "reached its deadline" in out  # the flow compensated
    assert "1 compensated" in out
    assert "exhausted" in out
    assert "permanent" in out
    assert (tmp_path / "demo.db").exists()


# -- the worker process and signals ------------------------------------------------------


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def _start_worker(url: str, tmp_path: Path) -> tuple[subprocess.Popen[bytes], Path, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHARTS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    out, err = tmp_path / "worker.out", tmp_path / "worker.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                "--log-level",
                "warning",
                "worker",
                "--app",
                APP,
                "--db",
                url,
                "--concurrency",
                "2",
                "--poll",
                "0.05",
            ],
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
        )
    return proc, out, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_worker_stops_cleanly_on_signal_after_the_running_handler_finishes(
    signum: signal.Signals, run: Invoke, reader: Engine, url: str, tmp_path: Path
) -> None:
    """On SIGTERM/SIGINT the worker lets the running handler finish, claims nothing new, exits 0."""
    marker = tmp_path / "slow.done"
    slow = enqueue(run, "slow", {"marker": str(marker), "seconds": 1.5})
    proc, out, err = _start_worker(url, tmp_path)
    try:
        started = Path(str(marker) + ".started")
        _wait_for(started.exists, 15.0, "the slow handler to begin")
        proc.send_signal(signum)
        _wait_for(lambda: "stopping after" in err.read_text(), 5.0, "the signal's notice")
        # Due now, with a thread free, but the worker must not start it once told to stop.
        queued = enqueue(run, "ship", {"order_id": 1})
        assert not marker.exists(), "the handler finished before the signal: test is too slow"
        returncode = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = err.read_text()
    assert returncode == 0, stderr
    assert marker.read_text() == "finished\n"
    assert reader.get(slow).state == "succeeded"
    assert reader.get(queued).state == "pending"
    assert "stopping after the running handlers finish" in stderr
    assert "worker stopped: claimed 1, succeeded 1" in out.read_text()


def test_worker_second_signal_exits_at_once(
    run: Invoke, reader: Engine, url: str, tmp_path: Path
) -> None:
    """A second SIGTERM (a second apart) exits at once with 128+15; the lease will expire."""
    marker = tmp_path / "slow.done"
    slow = enqueue(run, "slow", {"marker": str(marker), "seconds": 5.0})
    proc, _out, err = _start_worker(url, tmp_path)
    try:
        started = Path(str(marker) + ".started")
        _wait_for(started.exists, 15.0, "the slow handler to begin")
        proc.send_signal(signal.SIGTERM)
        _wait_for(lambda: "stopping after" in err.read_text(), 5.0, "the first signal's notice")
        time.sleep(1.2)  # a repeat within a second is the same stop delivered twice
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=3)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert returncode == 128 + signal.SIGTERM
    assert "exiting now" in err.read_text()
    assert not marker.exists()
    assert reader.get(slow).state == "running"  # its lease expires; nothing was committed


def test_worker_takes_a_signal_delivered_twice_as_one_stop(
    run: Invoke, reader: Engine, url: str, tmp_path: Path
) -> None:
    """Two SIGTERMs at once (systemd plus a supervisor's forward) still stop gracefully."""
    marker = tmp_path / "slow.done"
    slow = enqueue(run, "slow", {"marker": str(marker), "seconds": 1.0})
    proc, _out, err = _start_worker(url, tmp_path)
    try:
        started = Path(str(marker) + ".started")
        _wait_for(started.exists, 15.0, "the slow handler to begin")
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert returncode == 0, err.read_text()
    assert "exiting now" not in err.read_text()
    assert marker.exists() and reader.get(slow).state == "succeeded"


def test_read_commands_refuse_a_missing_database_file(tmp_path: Path) -> None:
    """Read commands on a SQLite file that does not exist say so and create nothing."""
    missing = tmp_path / "nowhere.db"
    for args in (["jobs"], ["inspect", "1"], ["requeue", "1"], ["cancel", "1"]):
        result = CliRunner().invoke(cli, [*args, "--db", f"sqlite:///{missing}"])
        assert result.exit_code != 0 and "no database at" in result.output, args
    assert not missing.exists()


def test_describe_lists_each_kind_with_its_safety_declarations() -> None:
    """`describe` says, per kind: trigger, keyed or invariant, bounded retries, chart checks."""
    result = CliRunner().invoke(cli, ["describe", "--app", "engine.demo:build"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    assert set(lines) == {"greet", "flaky_transfer", "email_report", "sync_partner", "ship_order"}
    assert "reserve: bounded: 4 attempts" in lines.pop("ship_order")
    assert "keyed (TTL 7d)" in lines["greet"] and "bounded: 4 attempts" in lines["greet"]
    assert "invariant: rendering a report twice is harmless" in lines["email_report"]
    assert all("event" in line and "lifecycle" in line and " ok" in line for line in lines.values())
