"""Structured logs: one event when an attempt starts and one when it ends."""

from __future__ import annotations

import io
import json
import re
import sys
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel
from structlog.testing import capture_logs

from engine import Engine, FrozenClock, RetryPolicy, events
from engine.logs import configure_logging, iso_utc


class P(BaseModel):
    n: int


def test_attempt_start_and_end_events_carry_the_fields(engine: Engine, clock: FrozenClock) -> None:
    """Start and finish events name job, kind, attempt, correlation id; a retry says when."""

    def handler(ctx, p):  # type: ignore[no-untyped-def]
        if p.n == 1:
            raise RuntimeError("boom")

    engine.job(
        payload=P,
        idempotency=lambda p: str(p.n),
        retry=RetryPolicy(max_attempts=2, base=2.0, jitter=0),
        kind="k",
    )(handler)
    events.set_log_threshold(events.LEVELS["debug"])  # attempt.started is a debug event
    ok = engine.enqueue("k", {"n": 0}, correlation_id="cid-ok")
    bad = engine.enqueue("k", {"n": 1}, correlation_id="cid-bad")
    with capture_logs() as logs:
        engine.run_until_idle()
    started = [e for e in logs if e["event"] == "attempt.started"]
    finished = {e["job_id"]: e for e in logs if e["event"] == "attempt.finished"}
    assert {e["job_id"] for e in started} == {ok, bad}
    assert all(e["attempt"] == 1 and e["kind"] == "k" for e in started)
    assert finished[ok]["outcome"] == "succeed" and finished[ok]["state"] == "succeeded"
    assert finished[ok]["correlation_id"] == "cid-ok" and "next_due_at" not in finished[ok]
    assert finished[bad]["outcome"] == "fail" and finished[bad]["state"] == "retry_wait"
    assert finished[bad]["error"] == "RuntimeError" and finished[bad]["correlation_id"] == "cid-bad"
    expected_due = clock.now().replace(second=clock.now().second + 2)
    assert finished[bad]["next_due_at"] == expected_due.isoformat()
    assert all(isinstance(e["duration_ms"], float) for e in finished.values())


def test_at_the_default_level_an_attempt_logs_one_line(engine: Engine) -> None:
    """attempt.started is debug: a drain pays for one line per attempt, not two."""
    engine.job(payload=P, idempotency=lambda p: str(p.n), kind="k")(lambda ctx, p: None)
    engine.enqueue("k", {"n": 0})
    with capture_logs() as logs:
        engine.run_until_idle()
    names = [e["event"] for e in logs if e["event"].startswith("attempt.")]
    assert names == ["attempt.finished"]


def test_the_cli_log_writes_one_json_line_per_event_from_its_level_up(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI's own pipeline: fields, level and a UTC timestamp per line; what JSON cannot
    hold as it is comes out as its repr; debug events stay out at info."""
    when = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)
    configure_logging("info", "json")
    events.log_event(events.Event("job.told", "info", {"job_id": 7, "when": when}))
    events.log_event(events.Event("job.whispered", "debug", {"job_id": 8}))
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    line = json.loads(lines[0])
    assert (line["event"], line["level"], line["job_id"]) == ("job.told", "info", 7)
    assert line["when"] == repr(when)
    stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
    assert abs(stamp - datetime.now(UTC)) < timedelta(seconds=60)


def test_an_app_that_configures_structlog_after_the_cli_gets_the_events(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI's pipeline is assembled once, but a later structlog configuration (the
    app's, imported by ``worker --app``) is the one that hears the events."""
    configure_logging("info", "console")
    with capture_logs() as logs:
        events.log_event(events.Event("job.told", "info", {"job_id": 7}))
    assert logs == [{"event": "job.told", "job_id": 7, "log_level": "info"}]
    assert capsys.readouterr().err == ""
    events.log_event(events.Event("job.told", "info", {"job_id": 8}))  # the CLI's again
    assert "job_id=8" in capsys.readouterr().err
    elsewhere = io.StringIO()  # the app keeps the CLI's processors, with its own output
    structlog.configure(logger_factory=lambda *_: structlog.PrintLogger(file=elsewhere))
    events.log_event(events.Event("job.told", "info", {"job_id": 9}))
    assert "job_id=9" in elsewhere.getvalue() and capsys.readouterr().err == ""


@given(st.lists(st.floats(min_value=0, max_value=2**33, allow_nan=False), min_size=1))
def test_log_timestamps_are_the_utc_time_to_the_microsecond(times: list[float]) -> None:
    """Whatever the order of the times (the per-second cache goes back and forth)."""
    for now in times:
        text = iso_utc(now)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", text), text
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        exact = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=now)
        assert timedelta(0) <= exact - parsed < timedelta(microseconds=2), (now, text)


def test_a_line_is_out_when_the_call_returns_on_a_block_buffered_stderr(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker whose stderr is a buffered file (a supervisor's) loses no line to a kill."""
    written = io.BytesIO()
    buffered = io.TextIOWrapper(io.BufferedWriter(written, 1 << 16), line_buffering=False)
    monkeypatch.setattr(sys, "stderr", buffered)
    configure_logging("info", "json")
    events.log_event(events.Event("job.told", "info", {"job_id": 7}))
    assert json.loads(written.getvalue())["job_id"] == 7


def test_without_any_stderr_a_line_is_dropped_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """pythonw and some daemons run with ``sys.stderr = None``: the engine must go on."""
    configure_logging("info", "json")
    monkeypatch.setattr(sys, "stderr", None)
    telemetry, heard = events.Telemetry(), []
    telemetry.attach(heard.append)  # after the log: it still hears the event
    telemetry.info("job.told", job_id=7)
    assert [event.name for event in heard] == ["job.told"]
