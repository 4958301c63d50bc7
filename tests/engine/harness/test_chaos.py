"""The chaos harness, CI-sized: workers SIGKILLed at random lose nothing and repeat nothing."""

from __future__ import annotations

from pathlib import Path

from engine.harness.chaos import run


def test_chaos_kills_lose_nothing_and_duplicate_no_keyed_effect(
    tmp_path: Path, db_url: str, backend: str
) -> None:
    """SIGKILLs at random moments: every job final, no lost job, no duplicated effect."""
    report = run(
        directory=tmp_path / "chaos",
        jobs_count=1200,
        workers=3,
        kills=12,
        kill_interval=(0.2, 0.6),
        lease=1.5,
        seed=20261127,
        db=db_url if backend == "postgresql" else None,
        fresh=False,
    )
    print(report.summary())
    assert report.ok, report.summary()
    assert report.kills >= 5, "the workers were killed while there was work to interrupt"
    assert report.states == {"succeeded": 1200}
    assert report.expired >= 1, "at least one kill interrupted a running attempt"
    assert report.effects == 1200 and report.duplicated_effects == 0


def test_chaos_kills_lose_no_step_of_a_flow(tmp_path: Path, db_url: str, backend: str) -> None:
    """The multi-step settle flow under kills: every job final, each of its two keyed
    effects (one per work step) exactly once, every history a path through the flow."""
    report = run(
        directory=tmp_path / "chaos",
        jobs_count=400,
        workers=3,
        kills=10,
        kill_interval=(0.2, 0.6),
        lease=1.5,
        seed=20261128,
        db=db_url if backend == "postgresql" else None,
        fresh=False,
        kind="settle",
    )
    print(report.summary())
    assert report.ok, report.summary()
    assert report.states == {"succeeded": 400}
    assert report.effects == 800 and report.duplicated_effects == 0
    assert report.kills >= 3


def test_chaos_kills_lose_nothing_with_async_handlers(
    tmp_path: Path, db_url: str, backend: str
) -> None:
    """The same kills with ``async def`` handlers whose keyed effect is an awaited
    ``ctx.astep``: nothing lost, no effect duplicated."""
    report = run(
        directory=tmp_path / "chaos",
        jobs_count=600,
        workers=3,
        kills=8,
        kill_interval=(0.2, 0.6),
        lease=1.5,
        seed=20261203,
        db=db_url if backend == "postgresql" else None,
        fresh=False,
        kind="atransfer",
    )
    print(report.summary())
    assert report.ok, report.summary()
    assert report.states == {"succeeded": 600}
    assert report.effects == 600 and report.duplicated_effects == 0
    assert report.kills >= 3
