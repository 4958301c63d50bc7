"""Injectable clocks, so tests drive time instead of sleeping."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The machine's wall clock in UTC."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that only moves when told to: ``advance(seconds)`` or ``set(when)``."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or datetime(2026, 1, 1, tzinfo=UTC)
        if start.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, seconds: float | timedelta) -> datetime:
        step = seconds if isinstance(seconds, timedelta) else timedelta(seconds=seconds)
        with self._lock:
            self._now += step
            return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("FrozenClock needs an aware datetime")
        with self._lock:
            self._now = when


class OffsetClock:
    """The wall clock shifted by ``seconds``: a worker whose clock is wrong (for tests)."""

    def __init__(self, seconds: float) -> None:
        self.offset = timedelta(seconds=seconds)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset


class DatabaseClock:
    """The database server's clock without a round trip per reading: read from the server
    once per ``resync`` seconds, carried forward by the local monotonic clock in between.

    It runs ahead of the server by at most the read's round trip (plus the monotonic
    clock's drift since the last read: microseconds over seconds), never behind it, and a
    wall-clock step on this host cannot move it. It never runs backwards, so event times
    stay ordered across a resync.
    """

    def __init__(
        self,
        read: Callable[[], datetime],
        resync: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._resync = resync
        self._monotonic = monotonic
        self._base: tuple[datetime, float] | None = None  # (server time, monotonic then)
        self._last: datetime | None = None
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            mono = self._monotonic()
            base = self._base
            if base is None or mono - base[1] >= self._resync:
                server = self._read()
                # Taken as read when the request left: the server's reading is at least
                # that late, so this clock is never behind it (a job the server stamps
                # due now is due here too); it runs ahead by at most the round trip.
                base = self._base = (server, mono)
                mono = self._monotonic()
            value = base[0] + timedelta(seconds=mono - base[1])
            if self._last is not None and value < self._last:
                value = self._last
            self._last = value
            return value
