"""What the lifecycle verbs (claim, commit, rescue, ...) need of the engine they serve.

A Protocol, so each verb module depends on this short list and not on ``Engine`` itself
(which imports them all): the verbs stay free of import circles and testable alone.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from engine.events import Telemetry
from engine.moves import Moves
from engine.registry import Registry
from engine.store import Store


class Runtime(Protocol):
    registry: Registry
    moves: Moves
    telemetry: Telemetry
    worker_id: str
    lease_seconds: float
    batch_size: int
    start_wave: int

    @property
    def store(self) -> Store: ...

    def now(self) -> datetime:
        """The current time by the engine's time source."""
        ...

    def insert_time(self) -> datetime | None:
        """The time new jobs are stamped with; None lets the database's clock stamp them."""
        ...

    def lease_base(self, now: datetime, tx_time: datetime | None) -> datetime:
        """When a lease taken by a claim at ``now`` starts."""
        ...
