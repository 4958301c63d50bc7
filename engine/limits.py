"""Global limits: at most N jobs of a kind (or queue) running across every worker and host,
and at most N starts per period. Declared at registration, enforced inside the claim's
transaction (``engine.store.limits``), so no worker can overshoot another's count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from engine.errors import RegistrationError
from engine.store.limits import ScopeLimit

MAX_RATE_STARTS = 10_000  # a rate keeps one row per start it allows in a period

ScopeKind = Literal["kind", "queue"]


@dataclass(frozen=True)
class Rate:
    """At most ``starts`` handler starts in any window of ``per`` (seconds or a timedelta).

    A sliding window, not a bucket: ``Rate(10, per=60)`` never lets an 11th start happen
    within 60 s of the first, however the starts bunch up.
    """

    starts: int
    per: float | timedelta = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.starts, bool) or not isinstance(self.starts, int):
            raise RegistrationError(f"Rate: starts must be an int, got {self.starts!r}")
        if not 1 <= self.starts <= MAX_RATE_STARTS:
            raise RegistrationError(
                f"Rate: starts must be between 1 and {MAX_RATE_STARTS}, got {self.starts}"
            )
        seconds = self.seconds
        if not (math.isfinite(seconds) and seconds > 0):
            raise RegistrationError(f"Rate: per must be a positive period, got {self.per!r}")

    @property
    def seconds(self) -> float:
        if isinstance(self.per, timedelta):
            return self.per.total_seconds()
        if isinstance(self.per, bool) or not isinstance(self.per, int | float):
            raise RegistrationError(f"Rate: per is seconds or a timedelta, got {self.per!r}")
        return float(self.per)

    @property
    def period(self) -> timedelta:
        return timedelta(seconds=self.seconds)

    def __str__(self) -> str:
        return f"{self.starts} start{'s' if self.starts != 1 else ''} per {self.seconds:g}s"


@dataclass(frozen=True)
class Limit:
    """What one scope (a kind or a queue) may use: running jobs and starts per period."""

    concurrency: int | None = None
    rate: Rate | None = None

    def __str__(self) -> str:
        parts = []
        if self.concurrency is not None:
            parts.append(f"at most {self.concurrency} running")
        if self.rate is not None:
            parts.append(f"at most {self.rate}")
        return ", ".join(parts)


@dataclass(frozen=True, order=True)
class Scope:
    """What a limit counts: the jobs of one kind, or of one queue."""

    by: ScopeKind
    name: str

    @property
    def key(self) -> str:
        """The scope's name in the database (rate slots, lock keys)."""
        return f"{self.by}:{self.name}"

    def __str__(self) -> str:
        return f"{self.by} {self.name!r}"


def make_limit(owner: str, concurrency: int | None, rate: Rate | None) -> Limit | None:
    """A checked ``Limit``, or None when neither is given (no limit costs nothing)."""
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise RegistrationError(f"{owner}: concurrency must be an int >= 1, got {concurrency!r}")
    if rate is not None and not isinstance(rate, Rate):
        raise RegistrationError(f"{owner}: rate must be a Rate(starts, per=seconds), got {rate!r}")
    if concurrency is None and rate is None:
        return None
    return Limit(concurrency, rate)


class Limits:
    """The limits an engine enforces, by scope: empty unless some registration asks."""

    def __init__(self) -> None:
        self._by_scope: dict[Scope, Limit] = {}
        self._for_store: tuple[ScopeLimit, ...] | None = None

    def set(self, scope: Scope, limit: Limit | None) -> None:
        if scope in self._by_scope:
            raise RegistrationError(f"{scope} already has a limit ({self._by_scope[scope]})")
        if limit is not None:
            self._by_scope[scope] = limit
            self._for_store = None

    def get(self, scope: Scope) -> Limit | None:
        return self._by_scope.get(scope)

    def of(self, kind: str, queue: str) -> dict[Scope, Limit]:
        """The limits a job of ``kind`` in ``queue`` counts against."""
        found = {}
        for scope in (Scope("kind", kind), Scope("queue", queue)):
            limit = self._by_scope.get(scope)
            if limit is not None:
                found[scope] = limit
        return found

    @property
    def all(self) -> Mapping[Scope, Limit]:
        return dict(self._by_scope)

    def for_store(self) -> tuple[ScopeLimit, ...]:
        """The limits as the claim's SQL counts them (built once per registration)."""
        if self._for_store is None:
            self._for_store = self._build()
        return self._for_store

    def _build(self) -> tuple[ScopeLimit, ...]:
        return tuple(
            ScopeLimit(
                scope.by,
                scope.name,
                limit.concurrency,
                limit.rate.starts if limit.rate else None,
                limit.rate.period if limit.rate else timedelta(seconds=1),
            )
            for scope, limit in sorted(self._by_scope.items())
        )

    def __bool__(self) -> bool:
        return bool(self._by_scope)
