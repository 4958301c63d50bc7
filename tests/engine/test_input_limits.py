"""Bad input gets a clear refusal and loses nothing: payloads and results over the size
limit, enqueue options of the wrong type, cron steps out of range; and retries that would
be unsafe are declared (NoRetry), not guessed."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from pydantic import BaseModel

from engine import (
    Engine,
    FrozenClock,
    Invariant,
    NoRetry,
    PayloadTooLarge,
    RegistrationError,
    RetryPolicy,
)
from engine.cli import cli
from engine.store.schema import jobs
from tests.conftest import logging_restored


class Blob(BaseModel):
    text: str


def make(url: str, clock: FrozenClock | None = None, **options: Any) -> Engine:
    engine = Engine(url, clock=clock, **options)

    @engine.job(payload=Blob, idempotency=Invariant("test"))
    def store_blob(ctx: Any, blob: Blob) -> Any:
        if blob.text == "big result":
            return "x" * 2_000
        if blob.text == "big step":
            ctx.step("fetch", lambda: ["y"] * 1_000)
        return None

    return engine


def count(engine: Engine) -> int:
    with engine.store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one())


def test_a_payload_over_the_limit_is_refused_and_nothing_is_stored(db_url: str) -> None:
    engine = make(db_url, max_payload_bytes=1_000)
    engine.enqueue("store_blob", {"text": "x" * 900})
    with pytest.raises(PayloadTooLarge, match=r"1,0\d\d bytes of JSON, over the limit of 1,000"):
        engine.enqueue("store_blob", {"text": "x" * 1_000})
    with pytest.raises(PayloadTooLarge):  # all or nothing: the small one is not stored either
        engine.enqueue_many("store_blob", [{"text": "ok"}, {"text": "x" * 5_000}])
    assert count(engine) == 1
    engine.close()
    unlimited = make(db_url, max_payload_bytes=None)
    unlimited.enqueue("store_blob", {"text": "x" * 2_000_000})
    assert count(unlimited) == 2
    unlimited.close()


def test_the_default_limit_is_a_megabyte() -> None:
    engine = make("sqlite://")
    assert engine.registry.get("store_blob").max_payload_bytes == 1_000_000
    with pytest.raises(ValueError, match="positive number of bytes"):
        Engine("sqlite://", max_result_bytes=0)


@pytest.mark.parametrize("text", ["big result", "big step"])
def test_a_result_over_the_limit_quarantines_the_attempt(
    db_url: str, clock: FrozenClock, text: str
) -> None:
    engine = make(db_url, clock, max_result_bytes=1_000)
    job_id = engine.enqueue("store_blob", {"text": text})
    engine.run_until_idle()
    view = engine.get(job_id)
    assert (view.state, view.quarantine_reason, view.attempt) == ("quarantined", "too_large", 1)
    assert view.last_error is not None and "over the limit of 1,000" in view.last_error.message
    engine.close()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"priority": "x"}, TypeError, "priority must be an int"),
        ({"priority": True}, TypeError, "priority must be an int"),
        ({"priority": 2**40}, ValueError, "32 bits"),
        ({"queue": ""}, ValueError, "queue must be a non-empty str"),
        ({"correlation_id": "c" * 65}, ValueError, "at most 64 chars"),
        ({"delay": "5"}, TypeError, "delay must be seconds"),
        ({"delay": 5, "run_at": datetime(2030, 1, 1, tzinfo=UTC)}, ValueError, "not both"),
        ({"run_at": "tomorrow"}, TypeError, "run_at must be a datetime"),
    ],
)
def test_enqueue_options_of_the_wrong_type_are_refused(
    db_url: str, options: dict[str, Any], error: type[Exception], message: str
) -> None:
    engine = make(db_url)
    with pytest.raises(error, match=message):
        engine.enqueue("store_blob", {"text": "a"}, **options)
    assert count(engine) == 0
    engine.close()


@pytest.mark.parametrize(
    ("expr", "field"),
    [("*/61 * * * *", "minute"), ("0 */24 * * *", "hour"), ("0 0 */31 * *", "day of month")],
)
def test_a_cron_step_out_of_its_range_is_refused(expr: str, field: str) -> None:
    engine = Engine("sqlite://")
    with pytest.raises(RegistrationError, match=f"in the {field} field"):
        engine.cron(expr, idempotency=Invariant("test"))(lambda ctx, p: None)
    engine.cron("*/59 * * * *", idempotency=Invariant("test"), kind="ok")(lambda ctx, p: None)


@pytest.fixture
def cli_engine() -> Any:
    """The CLI app's engine keeps the first --db it opens: close it before and after."""
    from tests.engine import cli_app

    cli_app.engine.close()
    yield cli_app.engine
    cli_app.engine.close()


def test_the_cli_reads_a_payload_from_stdin(tmp_path: Path, cli_engine: Any) -> None:
    """A payload too long for a command line goes through stdin; one over the limit is
    refused in one line, nothing stored."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    app = "tests.engine.cli_app:engine"
    runner = CliRunner()
    big = '{"order_id": 1, "note": "' + "a" * 600_000 + '"}'
    with logging_restored():
        result = runner.invoke(cli, ["enqueue", "ship", "-", "--app", app, "--db", url], input=big)
    assert result.exit_code == 0, result.output
    too_big = '{"order_id": 2, "note": "' + "a" * 1_200_000 + '"}'
    with logging_restored():
        refused = runner.invoke(
            cli, ["enqueue", "ship", "-", "--app", app, "--db", url], input=too_big
        )
    assert refused.exit_code == 1
    assert "over the limit of 1,000,000" in refused.output and "Traceback" not in refused.output


def test_no_retry_gives_one_attempt_and_says_why(db_url: str, clock: FrozenClock) -> None:
    engine = Engine(db_url, clock=clock)
    calls: list[int] = []

    @engine.job(
        idempotency=Invariant("test"),
        retry=NoRetry("the bank's API takes no idempotency key: a retry could pay twice"),
    )
    def pay(ctx: Any, _payload: Any) -> None:
        calls.append(ctx.attempt)
        raise RuntimeError("timeout talking to the bank")

    job_id = engine.enqueue("pay")
    engine.run_until_idle()
    clock.advance(3600)
    engine.run_until_idle()
    view = engine.get(job_id)
    assert calls == [1] and (view.state, view.quarantine_reason) == ("quarantined", "exhausted")
    with pytest.raises(ValueError, match="NoRetry needs a reason"):
        NoRetry(" ")
    assert RetryPolicy().max_attempts == 5  # no declaration: the bounded default stays
    engine.close()


def test_describe_and_check_show_a_declared_no_retry(cli_engine: Any) -> None:
    app = "tests.engine.cli_app:engine"
    with logging_restored():
        result = CliRunner().invoke(cli, ["describe", "--app", app])
    assert result.exit_code == 0, result.output
    assert "none (a second charge" in result.output
    with logging_restored():
        assert CliRunner().invoke(cli, ["check", "--app", app]).exit_code == 0
