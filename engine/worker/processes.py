"""Process isolation: run handlers in a child process that can really be killed.

In thread mode a hung handler cannot be stopped: the worker fails its attempt at the
timeout, fences its late result and replaces its thread, but the thread lives on. In
process mode each handler slot owns a child process (``python -m engine.worker.processes``); at
the timeout the child is SIGKILLed, and a child that dies on its own (a handler calling
``os._exit``, a segfault, the OOM killer) fails only the attempt it was running.

The protocol is one JSON object per line (never pickle): the parent writes an attempt to
the child's stdin and reads the outcome from the child's protocol pipe (its original
stdout; the handler's own prints go to stderr).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import IO, Any

from engine.attempt import run_attempt
from engine.events import Telemetry
from engine.outcomes import Claimed, ErrorClass, Failure, Outcome
from engine.store.rows import CorruptJSON
from statecharts import T


class ProcessRunner:
    """Runs attempts in a child process, restarting it after it dies or is killed."""

    def __init__(
        self, app_spec: str, url: str, log_args: list[str], start_timeout: float = 60.0
    ) -> None:
        self.start_timeout = start_timeout
        module = "engine.worker.processes"
        self.command = [sys.executable, "-m", module, "--app", app_spec, "--db", url, *log_args]
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def _child(self) -> subprocess.Popen[str]:
        """The running child, started (and waited for) if needed; kill() can stop the wait."""
        with self._lock:
            proc = self._proc
            if proc is not None and proc.poll() is None:
                return proc
            # Our own interpreter and module; the arguments come from the worker's own CLI.
            # A session of its own: a Ctrl-C or SIGTERM to the worker's group does not reach
            # the handler; the worker decides when its children stop.
            proc = subprocess.Popen(  # noqa: S603
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            self._proc = proc
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], self.start_timeout)
        line = proc.stdout.readline() if ready else ""
        if not line:  # the app import hung, failed or the child was killed meanwhile
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
            raise RuntimeError(
                f"the handler process did not start within {self.start_timeout:g}s "
                f"(exit status {proc.returncode}); see its stderr"
            )
        return proc

    def prepare(self) -> None:
        """Start the child (if it is not running) before an attempt's clock starts."""
        self._child()

    def run(
        self, claimed: Claimed, store: Any, now: Callable[[], datetime], telemetry: Telemetry
    ) -> Outcome:
        if isinstance(claimed.payload, CorruptJSON):
            return run_attempt(claimed, store, now, telemetry)  # never reaches a handler
        proc = self._child()
        request = {
            "job_id": claimed.job_id,
            "kind": claimed.kind,
            "state": claimed.state,
            "version": claimed.version,
            "lease_token": claimed.lease_token,
            "attempt": claimed.attempt,
            "max_attempts": claimed.max_attempts,
            "payload": claimed.payload,
            "correlation_id": claimed.correlation_id,
            "steps": claimed.steps,
        }
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            line = proc.stdout.readline()
        except (BrokenPipeError, OSError):
            line = ""
        if not line:
            code = proc.wait()
            failure = Failure(
                ErrorClass.PROCESS_DIED,
                f"the handler's process exited with status {code} while running the attempt",
            )
            return Outcome(claimed, T.FAIL, failure=failure)
        reply = json.loads(line)
        failure_fields = reply.get("failure")
        return Outcome(
            claimed,
            reply["trigger"],
            failure=Failure(**failure_fields) if failure_fields else None,
            result=reply.get("result"),
            duration=reply.get("duration", 0.0),
            fenced=reply.get("fenced", False),
        )

    def kill(self) -> None:
        """Kill the child now (a hung handler), with any process it started (its own
        process group: the child runs in a new session); the next run starts a fresh one."""
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                try:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    self._proc.kill()

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                assert self._proc.stdin is not None
                self._proc.stdin.close()  # the child exits at end of input
                try:
                    self._proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self._proc.kill()


def serve(app_spec: str, url: str, requests: IO[str], replies: IO[str]) -> None:
    """The child's loop: run each attempt read from ``requests``, answer on ``replies``."""
    from engine.app import load_app

    engine = load_app(app_spec)
    engine.bind(url)
    store = engine.store
    replies.write(json.dumps({"ready": True}) + "\n")
    replies.flush()
    for line in requests:
        request = json.loads(line)
        spec = engine.registry.get(request.pop("kind"))
        claimed = Claimed(kind=spec.kind, spec=spec, **request)
        outcome = run_attempt(claimed, store, engine.now, engine.telemetry)
        failure = outcome.failure
        reply = {
            "trigger": outcome.trigger,
            "failure": vars(failure) if failure else None,
            "result": outcome.result,
            "duration": outcome.duration,
            "fenced": outcome.fenced,
        }
        replies.write(json.dumps(reply) + "\n")
        replies.flush()


def _exit_with_parent() -> None:
    """Exit when the worker that started us is gone (it was SIGKILLed, say)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(70)

    threading.Thread(target=watch, name="jobcharts-parent-watch", daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(description="jobcharts handler process (internal)")
    parser.add_argument("--app", required=True)
    parser.add_argument("--db", required=True)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--log-format", default="console")
    args = parser.parse_args()
    from engine.logs import configure_logging

    configure_logging(args.log_level, args.log_format)
    # The worker stops its children (it kills a hung one); signals meant for the worker's
    # process group are not for us. If the worker dies, we follow it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with_parent()
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # handler prints must not break it
    serve(args.app, args.db, sys.stdin, protocol)


if __name__ == "__main__":
    main()
