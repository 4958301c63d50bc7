"""Shared fixtures: a real SQLite file per test and a frozen clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import Engine, FrozenClock


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh SQLite database file for one test."""
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def engine(db_url: str, clock: FrozenClock) -> Iterator[Engine]:
    """An engine on a real SQLite file, driven by a frozen clock."""
    eng = Engine(db_url, clock=clock, seed=7)
    yield eng
    eng.close()
