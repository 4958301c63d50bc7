"""Process isolation: a hung handler is killed at its timeout, a dying one fails alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.worker import Worker
from tests.engine import iso_app


@pytest.fixture
def app(db_url: str) -> Iterator[object]:
    iso_app.engine.close()
    iso_app.engine.bind(db_url)
    yield iso_app.engine
    iso_app.engine.close()


def test_process_isolation_kills_hung_handlers_and_survives_dying_ones(app: object) -> None:
    """Hang: killed at 0.5 s then retried; os._exit: that attempt fails; the worker goes on."""
    engine = iso_app.engine
    hang = engine.enqueue("hang", {"n": 1})
    die = engine.enqueue("die", {"n": 1})
    echo = engine.enqueue("echo", {"n": 1})
    worker = Worker(
        engine,
        concurrency=2,
        poll_interval=0.05,
        isolation="process",
        app_spec="tests.engine.iso_app:engine",
        log_args=["--log-level", "error"],
    )
    started = time.monotonic()
    report = worker.run(until_idle=True)
    elapsed = time.monotonic() - started
    assert elapsed < 20, "the 60 s sleep was killed, not waited for"
    views = {name: engine.get(i) for name, i in (("hang", hang), ("die", die), ("echo", echo))}
    assert all(v.state == "succeeded" for v in views.values()), {
        k: v.state for k, v in views.items()
    }
    assert views["hang"].attempt == 2 and views["die"].attempt == 2
    errors = {
        name: [e.detail["error"] for e in v.history if e.detail and "error" in e.detail]
        for name, v in views.items()
    }
    assert errors == {"hang": ["HandlerTimeout"], "die": ["HandlerProcessDied"], "echo": []}
    assert all(v.result != os.getpid() for v in views.values()), "handlers ran in children"
    assert report.succeeded == 3


def test_process_isolation_requires_the_app_spec(app: object) -> None:
    """Process isolation without an importable app spec is refused up front."""
    with pytest.raises(ValueError, match="app_spec"):
        Worker(iso_app.engine, isolation="process")


def test_a_signal_to_the_whole_group_stops_gracefully_in_process_mode(
    app: object, db_url: str, backend: str, tmp_path: Path
) -> None:
    """SIGTERM to the worker's process group (systemd, Ctrl-C) lets the handler finish."""
    if backend != "sqlite":
        pytest.skip("one backend is enough for signal handling")
    engine = iso_app.engine
    job = engine.enqueue("slow", {"n": 1})
    marker = tmp_path / "handler.started"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "engine.cli", "--log-level", "warning", "worker",
            "--app", "tests.engine.iso_app:engine", "--db", db_url,
            "--isolation", "process", "--grace", "10", "--poll", "0.05",
        ],
        cwd=Path(__file__).resolve().parents[3],
        start_new_session=True,  # its own group, which we then signal as a whole
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "ISO_STARTED_MARKER": str(marker)},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the handler never began"
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    view = engine.get(job)
    assert view.state == "succeeded" and view.attempt == 1, [
        (e.trigger, e.detail) for e in view.history
    ]


def test_a_killed_handler_takes_the_processes_it_started_with_it(
    app: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hung handler's timeout kills its whole process group, not just the handler."""
    marker = tmp_path / "grandchild.pid"
    monkeypatch.setenv("ISO_GRANDCHILD", str(marker))
    engine = iso_app.engine
    job = engine.enqueue("spawn", {"n": 1})
    worker = Worker(
        engine,
        poll_interval=0.05,
        isolation="process",
        app_spec="tests.engine.iso_app:engine",
        log_args=["--log-level", "error"],
    )
    worker.run(until_idle=True)
    assert engine.get(job).state == "succeeded"
    grandchild = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(grandchild):
        time.sleep(0.05)
    assert not _alive(grandchild), "the handler's own child process outlived the kill"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie waiting for its parent is dead
        return stat.read().split()[2] != "Z"
