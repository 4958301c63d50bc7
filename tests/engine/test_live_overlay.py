"""`render --live`: the chart drawn with jobs per state (and the oldest's age) and
transitions per edge in a window, read from the real jobs and events tables."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from click.testing import CliRunner

from docs.examples.payout import PAYOUT, FakeGateway, FakeMailer, register
from engine import Engine, FrozenClock
from engine.cli import cli
from statecharts.render import to_dot, to_mermaid

ORDER = {"amount_cents": 100, "email": "a@b.c"}


def three_payouts(engine: Engine, clock: FrozenClock) -> None:
    gateway = FakeGateway(settle_after=0)
    register(engine, gateway, FakeMailer())
    engine.enqueue("payout", {**ORDER, "order_id": 1})
    engine.run_until_idle()  # charged, waiting for settlement
    clock.advance(60)
    engine.run_until_idle()  # settled (first check), notified: succeeded
    gateway.decline = True
    engine.enqueue("payout", {**ORDER, "order_id": 2})
    engine.run_until_idle()  # declined
    clock.advance(600)
    engine.enqueue("payout", {**ORDER, "order_id": 3}, delay=30)  # pending


def test_overlay_counts_jobs_per_state_and_transitions_per_edge(
    engine: Engine, clock: FrozenClock
) -> None:
    three_payouts(engine, clock)
    clock.advance(5)
    overlay = engine.overlay("payout", timedelta(hours=1))
    assert overlay.jobs == {"succeeded": 1, "declined": 1, "pending": 1}
    assert overlay.oldest["pending"] == timedelta(seconds=5)
    assert overlay.taken[("start", "pending", "charge")] == 2
    assert overlay.taken[("charged", "charge", "await_settlement")] == 1
    assert overlay.taken[("settled", "await_settlement", "notify")] == 1
    assert ("enqueue", None, "pending") not in overlay.taken
    dot, mermaid = to_dot(PAYOUT, overlay), to_mermaid(PAYOUT, overlay)
    assert 'pending [label="pending\\n(1 job, oldest 5s)"' in dot
    assert "declined\\n(1 job)" in dot  # no age on a final state
    assert "start [due_at <= now] x2" in dot and "penwidth=2" in dot
    assert "    pending : 1 job, oldest 5s" in mermaid
    assert "charged x1" in mermaid
    narrow = engine.overlay("payout", timedelta(seconds=1))
    assert narrow.taken == {} and narrow.jobs == overlay.jobs  # the window is for edges


def test_cli_renders_the_live_overlay(db_url: str, clock: FrozenClock) -> None:
    engine = Engine(db_url, clock=clock)
    try:
        three_payouts(engine, clock)
    finally:
        engine.close()
    base = ["render", "payout", "--app", "docs.examples.payout:engine", "--db", db_url]
    result = CliRunner().invoke(cli, [*base, "--live", "--window", "36500d", "--format", "mermaid"])
    assert result.exit_code == 0, result.output
    assert "succeeded : 1 job" in result.output and "notified x1" in result.output
    bad = CliRunner().invoke(
        cli,
        [
            "render",
            "payout",
            "--app",
            "docs.examples.payout:engine",
            "--db",
            db_url,
            "--live",
            "--format",
            "md",
        ],
    )
    assert bad.exit_code != 0 and "live overlay is drawn in" in bad.output


def test_a_kinds_overlay_counts_that_kinds_jobs_only(tmp_path: Path) -> None:
    """Two kinds share the lifecycle chart: `render KIND --live` counts that kind's jobs,
    the chart's name counts every kind's."""
    from engine import Engine, Invariant

    url = f"sqlite:///{tmp_path / 'kinds.db'}"
    engine = Engine(url)
    engine.job(idempotency=Invariant("t"), kind="a")(lambda ctx, p: None)
    engine.job(idempotency=Invariant("t"), kind="b")(lambda ctx, p: None)
    for _ in range(2):
        engine.enqueue("a")
    for _ in range(3):
        engine.enqueue("b")
    assert engine.overlay("lifecycle", kind="a").jobs == {"pending": 2}
    assert engine.overlay("lifecycle", kind="b").jobs == {"pending": 3}
    assert engine.overlay("lifecycle").jobs == {"pending": 5}
    assert "kind a" in (engine.overlay("lifecycle", kind="a").caption or "")
    engine.close()
