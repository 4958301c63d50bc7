"""Bounded retries: exponential backoff with jitter, a pure function of (attempt, rng)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

MAX_CAP = 10 * 365 * 86400.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a job is retried.

    ``max_attempts`` counts runs, the first included. The wait before the next run after
    failed attempt ``n`` is ``base * factor ** (n - 1)``, spread by ``±jitter`` (a fraction)
    and never above ``cap`` seconds. Exceptions listed in ``permanent`` quarantine at once,
    like ``Permanent``.
    """

    max_attempts: int = 5
    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    jitter: float = 0.1
    permanent: tuple[type[BaseException], ...] = field(default=())

    def __post_init__(self) -> None:
        problems = []
        if (
            not isinstance(self.max_attempts, int)
            or isinstance(self.max_attempts, bool)
            or self.max_attempts < 1
        ):
            problems.append(f"max_attempts must be an integer >= 1, got {self.max_attempts!r}")
        for name in ("base", "factor", "cap", "jitter"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                problems.append(f"{name} must be a finite number >= 0, got {value!r}")
        if not problems:
            if self.factor < 1:
                problems.append(f"factor must be >= 1 (backoff never shrinks), got {self.factor}")
            if self.jitter > 1:
                problems.append(f"jitter is a fraction in [0, 1], got {self.jitter}")
            if self.cap > MAX_CAP:
                problems.append(f"cap is at most {MAX_CAP:g} s (ten years), got {self.cap:g}")
        if problems:
            raise ValueError("invalid RetryPolicy: " + "; ".join(problems))

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based); always in [0, cap]."""
        return backoff(attempt, self.base, self.factor, self.cap, self.jitter, rng)

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts


@dataclass(frozen=True, init=False)
class NoRetry(RetryPolicy):
    """One attempt, then quarantine: declared where repeating a handler cannot be made
    safe (the counterpart of ``Invariant``). ``reason`` says why a second attempt could do
    harm ("the bank's API has no idempotency key: a retry could pay twice"); ``describe``
    shows it, and an operator decides what to do with the quarantined job."""

    reason: str = ""

    def __init__(self, reason: str, *, permanent: tuple[type[BaseException], ...] = ()) -> None:
        if not isinstance(reason, str) or not reason.strip():
            raise ValueError(
                "NoRetry needs a reason: say why a second attempt could do harm, e.g. "
                "NoRetry('the gateway has no idempotency key: a retry could charge twice')"
            )
        object.__setattr__(self, "reason", reason)
        super().__init__(max_attempts=1, base=0.0, jitter=0.0, permanent=permanent)


def backoff(
    attempt: int, base: float, factor: float, cap: float, jitter: float, rng: random.Random
) -> float:
    """Exponential backoff with symmetric jitter, clamped to [0, cap]."""
    exponent = max(attempt - 1, 0)
    try:
        raw = base * float(factor) ** exponent if base else 0.0
    except OverflowError:  # factor ** exponent beyond float range: the cap applies
        raw = math.inf
    raw = min(raw, cap)
    spread = raw * jitter * (2.0 * rng.random() - 1.0) if jitter else 0.0
    return min(max(raw + spread, 0.0), cap)
