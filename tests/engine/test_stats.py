"""``engine.stats`` and ``jobcharts stats`` on both backends: a scripted run on a frozen
clock (retries, quarantines, a cancel, a due backlog) and the exact figures it must give."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import structlog
from click.testing import CliRunner, Result
from pydantic import BaseModel

import engine.cli.stats  # noqa: F401 - registers the command (until engine/cli imports it)
from docs.examples.payout import FakeGateway, FakeMailer, payout_chart, register
from engine import Engine, FrozenClock, Invariant, JobContext, Permanent, RetryPolicy
from engine.cli import cli
from engine.cli.stats import duration_text
from engine.stats import OldestDue, ReasonCount, StateCount, Stats, lag_of, percentile, stats
from engine.store.rows import CorruptJSON
from engine.store.stats import StartRow

T0 = datetime(2026, 1, 1, tzinfo=UTC)  # the clock fixture's start
START = T0 + timedelta(hours=2)
END = START + timedelta(seconds=50)
HOUR = 3600.0

_cli_engines: list[Engine] = []


def frozen_app() -> Engine:
    """``--app tests.engine.test_stats:frozen_app``: a bare engine whose clock reads END."""
    eng = Engine(clock=FrozenClock(END))
    _cli_engines.append(eng)
    return eng


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No JOBCHARTS_DB or JOBCHARTS_APP from the environment; the CLI's engines closed and
    structlog (configured by the command group onto CliRunner's stream) reset afterwards."""
    monkeypatch.delenv("JOBCHARTS_DB", raising=False)
    monkeypatch.delenv("JOBCHARTS_APP", raising=False)
    yield
    while _cli_engines:
        _cli_engines.pop().close()
    structlog.reset_defaults()


class N(BaseModel):
    n: int


@pytest.fixture
def scripted(engine: Engine, clock: FrozenClock) -> Engine:
    return script(engine, clock)


def script(engine: Engine, clock: FrozenClock) -> Engine:
    """The run every figure below is computed from, by hand.

    T0: ok 0 enqueued and run (lag 0): outside a 1h window ending at END.
    START+0, +1, +2, +3, +3.5: ok 1, ok 2, flaky 1, broken 1, rejected 1 enqueued.
    START+4: all five start (lags 4, 3, 2, 1, 0.5): ok 1 and ok 2 succeed, flaky fails
      (retry in 10s: due +14), broken fails (retry in 5s: due +9), rejected raises
      Permanent (quarantined, permanent).
    START+20: broken starts (lag 11) and fails its last attempt (quarantined, exhausted);
      flaky starts (lag 6) and succeeds.
    START+25: ok 7 enqueued and cancelled.  START+30: ok 5 due now, ok 6 in 1000s.
    END = START+50: ok 5 has been due for 20s.
    """
    failed_once: set[int] = set()

    @engine.job(payload=N, idempotency=Invariant("tests"))
    def ok(ctx: JobContext, p: N) -> None:
        return None

    @engine.job(
        payload=N,
        idempotency=Invariant("tests"),
        retry=RetryPolicy(max_attempts=3, base=10, jitter=0),
    )
    def flaky(ctx: JobContext, p: N) -> None:
        if p.n not in failed_once:
            failed_once.add(p.n)
            raise ConnectionError("first try fails")

    @engine.job(
        payload=N,
        idempotency=Invariant("tests"),
        retry=RetryPolicy(max_attempts=2, base=5, jitter=0),
    )
    def broken(ctx: JobContext, p: N) -> None:
        raise ConnectionError("always down")

    @engine.job(payload=N, idempotency=Invariant("tests"))
    def rejected(ctx: JobContext, p: N) -> None:
        raise Permanent("never")

    assert clock.now() == T0
    engine.enqueue("ok", {"n": 0})
    engine.run_until_idle()
    clock.set(START)
    for kind, n, step in (
        ("ok", 1, 1.0),
        ("ok", 2, 1.0),
        ("flaky", 1, 1.0),
        ("broken", 1, 0.5),
        ("rejected", 1, 0.5),
    ):
        engine.enqueue(kind, {"n": n})
        clock.advance(step)
    assert clock.now() == START + timedelta(seconds=4)
    assert engine.run_until_idle().claimed == 5
    clock.set(START + timedelta(seconds=20))
    assert engine.run_until_idle().claimed == 2
    clock.set(START + timedelta(seconds=25))
    assert engine.cancel(engine.enqueue("ok", {"n": 7})) == "cancelled"
    clock.set(START + timedelta(seconds=30))
    engine.enqueue("ok", {"n": 5})
    engine.enqueue("ok", {"n": 6}, delay=1000)
    clock.set(END)  # no worker ran since: ok 5 waits, due for 20s
    return engine


COUNTS = (
    StateCount("broken", "quarantined", True, 1),
    StateCount("flaky", "succeeded", True, 1),
    StateCount("ok", "cancelled", True, 1),
    StateCount("ok", "pending", False, 2),
    StateCount("ok", "succeeded", True, 3),
    StateCount("rejected", "quarantined", True, 1),
)


def test_the_figures_of_a_scripted_run(scripted: Engine) -> None:
    s = stats(scripted, END, HOUR)
    assert (s.now, s.window) == (END, HOUR)
    assert s.counts == COUNTS
    assert (s.unfinished, s.finished) == (2, 7)

    total = s.total
    assert total.kind is None
    assert total.finished == 6  # ok 0 finished at T0, before the window
    assert total.finished_by_state == {"succeeded": 3, "quarantined": 2, "cancelled": 1}
    assert total.per_second == 6 / 3600
    # Ended attempts: ok 1, ok 2, flaky x2, broken x2, rejected; failed: flaky's first,
    # broken's two, rejected's. The cancel and the enqueues and starts are no attempts.
    assert (total.attempts, total.failed, total.failure_rate) == (7, 4, 4 / 7)
    # Lags [0.5, 1, 2, 3, 4, 6, 11]: the retries' lags count from their due times.
    assert (total.lag_starts, total.lag_p50, total.lag_p99) == (7, 3.0, 11.0)
    assert not s.lag_sample_full

    kinds = {w.kind: w for w in s.kinds}
    assert [w.kind for w in s.kinds] == ["broken", "flaky", "ok", "rejected"]
    figures = {
        k: (
            w.finished,
            w.finished_by_state,
            w.attempts,
            w.failed,
            w.failure_rate,
            w.lag_starts,
            w.lag_p50,
            w.lag_p99,
        )
        for k, w in kinds.items()
    }
    assert figures == {
        "broken": (1, {"quarantined": 1}, 2, 2, 1.0, 2, 1.0, 11.0),
        "flaky": (1, {"succeeded": 1}, 2, 1, 0.5, 2, 2.0, 6.0),
        "ok": (3, {"succeeded": 2, "cancelled": 1}, 2, 0, 0.0, 2, 3.0, 4.0),
        "rejected": (1, {"quarantined": 1}, 1, 1, 1.0, 1, 0.5, 0.5),
    }
    assert kinds["ok"].per_second == 3 / 3600

    assert s.oldest_due == OldestDue(8, "ok", "pending", START + timedelta(seconds=30), 20.0)
    assert s.quarantine_reasons == (
        ReasonCount("broken", "exhausted", 1),
        ReasonCount("rejected", "permanent", 1),
    )


def test_the_window_decides_what_counts(scripted: Engine) -> None:
    """Three hours take in ok 0 (finished at T0, lag 0); a window starting exactly at
    START+4 leaves out what happened then: it is (now - window, now]."""
    s = stats(scripted, END, timedelta(hours=3))
    assert s.counts == COUNTS  # counts are of now, whatever the window
    assert s.total.finished == 7 and s.total.per_second == 7 / (3 * 3600)
    assert (s.total.attempts, s.total.failed, s.total.failure_rate) == (8, 4, 0.5)
    assert (s.total.lag_starts, s.total.lag_p50, s.total.lag_p99) == (8, 2.0, 11.0)

    late = stats(scripted, END, 46.0)
    assert late.total.finished_by_state == {"succeeded": 1, "quarantined": 1, "cancelled": 1}
    assert (late.total.attempts, late.total.failed) == (2, 1)
    assert (late.total.lag_starts, late.total.lag_p50, late.total.lag_p99) == (2, 6.0, 11.0)
    assert stats(scripted, END, 46.001).total.lag_starts == 7

    # Due is due_at <= now (ok 5 is due at START+30; ok 6 later still).
    due_now = stats(scripted, START + timedelta(seconds=30), HOUR).oldest_due
    assert due_now == OldestDue(8, "ok", "pending", START + timedelta(seconds=30), 0.0)
    assert stats(scripted, START + timedelta(seconds=29.9), HOUR).oldest_due is None


def test_the_lag_sample_takes_the_latest_starts(scripted: Engine) -> None:
    """Of the latest three starts (flaky's and broken's retries, and rejected's start)."""
    s = stats(scripted, END, HOUR, sample=3)
    assert s.lag_sample_full and s.lag_sample_limit == 3
    assert (s.total.lag_starts, s.total.lag_p50, s.total.lag_p99) == (3, 6.0, 11.0)
    assert {w.kind: w.lag_starts for w in s.kinds} == {
        "broken": 1,
        "flaky": 1,
        "ok": 0,  # finished jobs in the window, but its starts are older than the sample
        "rejected": 1,
    }
    assert s.total.attempts == 7  # the sample bounds the lag only


def test_a_store_gives_the_same_figures(scripted: Engine) -> None:
    assert stats(scripted.store, END, HOUR) == stats(scripted, END, HOUR)


def test_an_empty_database(engine: Engine) -> None:
    s = stats(engine, T0, HOUR)
    assert s.counts == () and s.kinds == () and s.quarantine_reasons == ()
    assert s.oldest_due is None
    assert (s.total.finished, s.total.attempts, s.total.failure_rate) == (0, 0, None)
    assert (s.total.lag_starts, s.total.lag_p50, s.total.lag_p99) == (0, None, None)
    assert json.loads(json.dumps(s.to_json()))["oldest_due"] is None


def test_a_flow_polls_and_its_own_outcomes_are_attempts(engine: Engine, clock: FrozenClock) -> None:
    """A poll's next check is its due time; entering a step with a timer is the documented
    approximation (the first check's wait counts as lag); a flow's outcomes end attempts."""
    register(engine, FakeGateway(settle_after=1), FakeMailer(), payout_chart(every=60))
    engine.enqueue("payout", {"order_id": 1, "amount_cents": 100, "email": "a@b.c"})
    clock.advance(2)
    engine.run_until_idle()  # charge starts (lag 2): "charged", the first check due at +62
    clock.advance(68)
    engine.run_until_idle()  # the check starts 8s late (counted 68s): "not yet", next at +130
    clock.advance(63)
    engine.run_until_idle()  # the check starts 3s late: "settled"; notify starts at once
    assert engine.get(1).state == "succeeded"
    s = stats(engine, clock.now(), HOUR)
    assert [(c.state, c.final, c.jobs) for c in s.counts] == [("succeeded", True, 1)]
    (payout,) = s.kinds
    assert (payout.attempts, payout.failed, payout.failure_rate) == (4, 0, 0.0)
    assert payout.finished_by_state == {"succeeded": 1}
    assert (payout.lag_starts, payout.lag_p50, payout.lag_p99) == (4, 2.0, 68.0)


@pytest.mark.parametrize("window", [0, -1.0, float("nan"), float("inf")])
def test_a_window_must_be_positive(engine: Engine, window: float) -> None:
    with pytest.raises(ValueError, match="window"):
        stats(engine, T0, window)


def test_lag_of_a_start_takes_its_due_time_from_the_previous_event() -> None:
    at = T0 + timedelta(seconds=100)

    def lag(previous_at: datetime | None, detail: object) -> float | None:
        return lag_of(StartRow("k", at, previous_at, detail))

    assert lag(T0, None) == 100.0  # enqueued (or released, requeued): due at once
    assert lag(T0, {"error": "E", "retry_in": 30.5}) == 69.5  # a retry's backoff
    assert lag(T0, {"next_check": (T0 + timedelta(seconds=60)).isoformat()}) == 40.0  # a poll
    assert lag(T0, {"retry_in": 250}) == 0.0  # started before it was due: never negative
    assert lag(T0, {"next_check": "not a time"}) == 100.0
    assert lag(T0, CorruptJSON("{", "bad")) == 100.0
    assert lag(None, None) is None  # no earlier event left: the due time is unknown


def test_nearest_rank_percentiles() -> None:
    assert percentile([], 50) is None
    assert percentile([7.0], 99) == 7.0
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0,
        99.0,
        100.0,
    )
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0  # rank 2.5 rounds up


# -- the command ----------------------------------------------------------------------------


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(cli, ["stats", *args])
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result


EXPECTED_TEXT = """\
jobs at 2026-01-01 02:00:50.000+00:00
kind      state        final  jobs
--------  -----------  -----  ----
broken    quarantined  yes    1
flaky     succeeded    yes    1
ok        cancelled    yes    1
ok        pending      no     2
ok        succeeded    yes    3
rejected  quarantined  yes    1
unfinished 2, finished 7

finished in the last 1h (since 2026-01-01 01:00:50.000+00:00)
kind      finished  per s     as
--------  --------  --------  ---------------------------------------
broken    1         0.000278  quarantined 1
flaky     1         0.000278  succeeded 1
ok        3         0.000833  cancelled 1, succeeded 2
rejected  1         0.000278  quarantined 1
(all)     6         0.00167   cancelled 1, quarantined 2, succeeded 3

attempts ended in the last 1h
kind      attempts  failed  failure rate  lag p50  lag p99
--------  --------  ------  ------------  -------  -------
broken    2         2       100.0%        1.000s   11.000s
flaky     2         1       50.0%         2.000s   6.000s
ok        2         0       0.0%          3.000s   4.000s
rejected  1         1       100.0%        0.500s   0.500s
(all)     7         4       57.1%         3.000s   11.000s
lag: from due to start, over all 7 start(s) of the window

oldest due job: 8 (ok, pending), due 2026-01-01 02:00:30.000+00:00, 20.000s ago

quarantine reasons
kind      reason     jobs
--------  ---------  ----
broken    exhausted  1
rejected  permanent  1"""


def test_the_command_prints_the_figures(scripted: Engine, db_url: str) -> None:
    out = invoke("--app", "tests.engine.test_stats:frozen_app", "--db", db_url).stdout
    assert out.rstrip("\n") == EXPECTED_TEXT


def test_the_command_prints_json(scripted: Engine, db_url: str) -> None:
    app = ("--app", "tests.engine.test_stats:frozen_app", "--db", db_url)
    data = json.loads(invoke(*app, "--json", "--window", "3h").stdout)
    assert data == stats(scripted, END, 3 * HOUR).to_json()
    assert data["now"] == "2026-01-01T02:00:50+00:00" and data["window_seconds"] == 10800.0
    assert data["jobs"]["unfinished"] == 2 and data["jobs"]["finished"] == 7
    assert {"kind": "ok", "state": "pending", "final": False, "jobs": 2} in data["jobs"][
        "by_kind_state"
    ]
    window = data["window"]
    assert (window["finished"], window["attempts"], window["failed"]) == (7, 8, 4)
    assert window["failure_rate"] == 0.5
    assert window["lag"] == {"starts": 8, "p50": 2.0, "p99": 11.0}
    assert window["kinds"]["ok"]["finished_by_state"] == {"cancelled": 1, "succeeded": 3}
    assert data["oldest_due"] == {
        "id": 8,
        "kind": "ok",
        "state": "pending",
        "due_at": "2026-01-01T02:00:30+00:00",
        "age_seconds": 20.0,
    }
    assert data["quarantine_reasons"] == [
        {"kind": "broken", "reason": "exhausted", "jobs": 1},
        {"kind": "rejected", "reason": "permanent", "jobs": 1},
    ]


def test_the_command_needs_no_app(scripted: Engine, db_url: str) -> None:
    """Kinds come from the data; the time is the machine's (or PostgreSQL's) now."""
    data = json.loads(invoke("--db", db_url, "--json").stdout)
    assert [tuple(c.values()) for c in data["jobs"]["by_kind_state"]] == [
        (c.kind, c.state, c.final, c.jobs) for c in COUNTS
    ]
    assert data["quarantine_reasons"][0] == {"kind": "broken", "reason": "exhausted", "jobs": 1}


def test_durations_read_as_seconds_then_the_two_largest_units() -> None:
    texts = [duration_text(x) for x in (None, 0.5, 59.9, 60, 125, 3661, 90000, 29055694.95)]
    assert texts == ["-", "0.500s", "59.900s", "1m 0s", "2m 5s", "1h 1m", "1d 1h", "336d 7h"]


def test_the_command_refuses_a_bad_window_and_a_missing_database(tmp_path: object) -> None:
    result = CliRunner().invoke(cli, ["stats", "--window", "0", "--db", "sqlite:///x.db"])
    assert result.exit_code == 2 and "--window" in result.output
    result = CliRunner().invoke(cli, ["stats", "--window", "soon"])
    assert result.exit_code == 2 and "not an age" in result.output
    missing = f"sqlite:///{tmp_path}/missing.db"
    result = CliRunner().invoke(cli, ["stats", "--db", missing])
    assert result.exit_code == 1 and "no database at" in result.output


def test_stats_is_a_frozen_json_ready_value(scripted: Engine) -> None:
    s = stats(scripted, END, HOUR)
    assert isinstance(s, Stats)
    with pytest.raises(AttributeError):
        s.window = 1.0  # type: ignore[misc]
    assert json.loads(json.dumps(s.to_json())) == s.to_json()
