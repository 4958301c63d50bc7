"""RetryPolicy validation and the backoff function: bounded, jittered, deterministic."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.retry import RetryPolicy, backoff
from statecharts import ATTEMPTS_LEFT, Facts

# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def test_defaults_are_valid() -> None:
    """RetryPolicy() with no arguments is accepted with its documented defaults."""
    policy = RetryPolicy()
    assert policy.max_attempts == 5
    assert policy.cap == 300.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 1},
        {"factor": 1},
        {"factor": 1.0},
        {"jitter": 0},
        {"jitter": 1},
        {"base": 0},
        {"cap": 0},
    ],
)
def test_boundary_values_are_accepted(kwargs: dict[str, float]) -> None:
    """Values exactly on the allowed boundaries construct a policy without error."""
    policy = RetryPolicy(**kwargs)  # type: ignore[arg-type]
    for name, value in kwargs.items():
        assert getattr(policy, name) == value


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": -3}, "max_attempts"),
        ({"max_attempts": 2.5}, "max_attempts"),
        ({"base": -1.0}, "base"),
        ({"cap": -0.5}, "cap"),
        ({"jitter": -0.1}, "jitter"),
        ({"factor": 0.5}, "factor"),
        ({"factor": 0}, "factor"),
        ({"jitter": 1.5}, "jitter"),
        ({"base": math.nan}, "base"),
        ({"base": math.inf}, "base"),
        ({"factor": math.nan}, "factor"),
        ({"factor": math.inf}, "factor"),
        ({"cap": math.inf}, "cap"),
        ({"cap": math.nan}, "cap"),
        ({"jitter": math.nan}, "jitter"),
        ({"jitter": -math.inf}, "jitter"),
        ({"base": "1"}, "base"),
    ],
)
def test_invalid_values_are_refused_naming_the_field(
    kwargs: dict[str, object], field_name: str
) -> None:
    """An out-of-range, non-finite or non-numeric parameter raises ValueError naming it."""
    with pytest.raises(ValueError, match="invalid RetryPolicy") as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
    assert field_name in str(info.value)


def test_all_problems_are_reported_together() -> None:
    """Several bad fields are listed in one error rather than one at a time."""
    with pytest.raises(ValueError) as info:
        RetryPolicy(max_attempts=0, base=-1.0, cap=math.nan)
    message = str(info.value)
    assert "max_attempts" in message
    assert "base" in message
    assert "cap" in message


def test_factor_below_one_message_explains_why() -> None:
    """A shrinking factor is refused with a message saying backoff never shrinks."""
    with pytest.raises(ValueError, match=r"factor must be >= 1"):
        RetryPolicy(factor=0.9)


# ---------------------------------------------------------------------------------------------
# Exhaustion
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attempt", "max_attempts", "exhausted"),
    [(0, 1, False), (1, 1, True), (4, 5, False), (5, 5, True), (6, 5, True)],
)
def test_exhausted_once_max_attempts_runs_are_used(
    attempt: int, max_attempts: int, exhausted: bool
) -> None:
    """exhausted(attempt) is true once attempt reaches max_attempts (first run included)."""
    assert RetryPolicy(max_attempts=max_attempts).exhausted(attempt) is exhausted


@given(attempt=st.integers(0, 60), max_attempts=st.integers(1, 50))
def test_exhausted_agrees_with_the_lifecycle_guard(attempt: int, max_attempts: int) -> None:
    """The policy's exhausted() is exactly the negation of the chart's attempts-left guard."""
    policy = RetryPolicy(max_attempts=max_attempts)
    assert policy.exhausted(attempt) is not ATTEMPTS_LEFT(Facts(attempt, max_attempts))


# ---------------------------------------------------------------------------------------------
# Backoff values without jitter
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "factor", "cap", "attempt", "expected"),
    [
        # base 1, factor 2: 1, 2, 4, 8, 16 ...
        (1.0, 2.0, 300.0, 1, 1.0),
        (1.0, 2.0, 300.0, 2, 2.0),
        (1.0, 2.0, 300.0, 3, 4.0),
        (1.0, 2.0, 300.0, 4, 8.0),
        (1.0, 2.0, 300.0, 5, 16.0),
        (1.0, 2.0, 300.0, 9, 256.0),
        # 2 ** 9 = 512 exceeds the cap
        (1.0, 2.0, 300.0, 10, 300.0),
        (1.0, 2.0, 300.0, 100, 300.0),
        # a small cap clamps early: 1, 2, 4, 8, then 10 for ever
        (1.0, 2.0, 10.0, 4, 8.0),
        (1.0, 2.0, 10.0, 5, 10.0),
        (1.0, 2.0, 10.0, 6, 10.0),
        # base 0.5, factor 3: 0.5, 1.5, 4.5, 13.5
        (0.5, 3.0, 300.0, 1, 0.5),
        (0.5, 3.0, 300.0, 2, 1.5),
        (0.5, 3.0, 300.0, 3, 4.5),
        (0.5, 3.0, 300.0, 4, 13.5),
        # factor 1 is a constant delay
        (7.0, 1.0, 300.0, 1, 7.0),
        (7.0, 1.0, 300.0, 50, 7.0),
        # a base above the cap is clamped from the first attempt
        (500.0, 2.0, 300.0, 1, 300.0),
        # cap 0 means retry immediately
        (1.0, 2.0, 0.0, 3, 0.0),
        # base 0 means retry immediately
        (0.0, 2.0, 300.0, 5, 0.0),
    ],
)
def test_backoff_table_without_jitter(
    base: float, factor: float, cap: float, attempt: int, expected: float
) -> None:
    """With jitter 0 the delay is base * factor ** (attempt - 1), clamped to cap."""
    policy = RetryPolicy(base=base, factor=factor, cap=cap, jitter=0.0)
    assert policy.delay(attempt, random.Random(0)) == pytest.approx(expected)
    assert backoff(attempt, base, factor, cap, 0.0, random.Random(0)) == pytest.approx(expected)


def test_attempt_zero_is_treated_as_the_first() -> None:
    """An attempt below 1 never shrinks the delay under base (the exponent is floored at 0)."""
    assert backoff(0, 3.0, 2.0, 300.0, 0.0, random.Random(0)) == 3.0
    assert backoff(-5, 3.0, 2.0, 300.0, 0.0, random.Random(0)) == 3.0


def test_zero_jitter_does_not_consume_randomness() -> None:
    """With jitter 0 the rng is left untouched, so callers' random streams do not shift."""
    rng = random.Random(42)
    backoff(3, 1.0, 2.0, 300.0, 0.0, rng)
    assert rng.random() == random.Random(42).random()


@pytest.mark.parametrize("factor", [2, 10, 2.0, 10.0, 1.5])
def test_huge_attempt_clamps_to_cap_without_overflow(factor: float) -> None:
    """An astronomically large attempt number yields exactly cap instead of OverflowError."""
    delay = backoff(10**6, 1.0, factor, 60.0, 0.0, random.Random(0))
    assert delay == 60.0


@pytest.mark.parametrize("factor", [2, 2.0])
def test_zero_base_stays_zero_for_huge_attempts(factor: float) -> None:
    """base 0 means 'retry at once' for every attempt, even one whose power overflows."""
    # Regression: 0 * factor ** n once overflowed to inf and came back as cap.
    assert backoff(10**4, 0.0, factor, 300.0, 0.0, random.Random(0)) == 0.0
    assert backoff(10**4, 0.0, factor, 300.0, 0.5, random.Random(0)) == 0.0


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

bases = st.floats(0.0, 1e6, allow_nan=False, allow_infinity=False)
factors = st.floats(1.0, 100.0, allow_nan=False, allow_infinity=False)
caps = st.floats(0.0, 1e7, allow_nan=False, allow_infinity=False)
jitters = st.floats(0.0, 1.0, allow_nan=False, allow_infinity=False)
seeds = st.integers(0, 2**64)
attempts = st.integers(0, 10**6)


@settings(max_examples=200)
@given(attempt=attempts, base=bases, factor=factors, cap=caps, jitter=jitters, seed=seeds)
def test_delay_is_always_within_zero_and_cap(
    attempt: int, base: float, factor: float, cap: float, jitter: float, seed: int
) -> None:
    """For any valid policy and attempt up to 10**6 the delay is a finite number in [0, cap]."""
    policy = RetryPolicy(base=base, factor=factor, cap=cap, jitter=jitter)
    delay = policy.delay(attempt, random.Random(seed))
    assert math.isfinite(delay)
    assert 0.0 <= delay <= cap


@settings(max_examples=200)
@given(
    attempt=st.integers(1, 60),
    base=st.floats(0.0, 1e3, allow_nan=False, allow_infinity=False),
    factor=st.floats(1.0, 10.0, allow_nan=False, allow_infinity=False),
    cap=caps,
    jitter=jitters,
    seed=seeds,
)
def test_jitter_spreads_at_most_by_its_fraction(
    attempt: int, base: float, factor: float, cap: float, jitter: float, seed: int
) -> None:
    """Below the cap the delay lies within ±jitter of base * factor ** (attempt - 1)."""
    raw = min(base * factor ** (attempt - 1), cap)  # cannot overflow: 1e3 * 10**59 is finite
    delay = backoff(attempt, base, factor, cap, jitter, random.Random(seed))
    slack = 1e-9 * max(raw, 1.0)
    assert raw * (1 - jitter) - slack <= delay <= min(raw * (1 + jitter), cap) + slack


@settings(max_examples=200)
@given(attempt=attempts, base=bases, factor=factors, cap=caps)
def test_zero_jitter_delay_is_monotone_in_attempt(
    attempt: int, base: float, factor: float, cap: float
) -> None:
    """Without jitter, a later attempt never waits less than an earlier one."""
    rng = random.Random(0)
    earlier = backoff(attempt, base, factor, cap, 0.0, rng)
    later = backoff(attempt + 1, base, factor, cap, 0.0, rng)
    much_later = backoff(attempt + 1000, base, factor, cap, 0.0, rng)
    assert earlier <= later <= much_later


@settings(max_examples=200)
@given(attempt=attempts, base=bases, factor=factors, cap=caps, jitter=jitters, seed=seeds)
def test_same_seed_gives_same_delay(
    attempt: int, base: float, factor: float, cap: float, jitter: float, seed: int
) -> None:
    """The delay is a pure function of attempt and rng: equal seeds give equal delays."""
    policy = RetryPolicy(base=base, factor=factor, cap=cap, jitter=jitter)
    first = policy.delay(attempt, random.Random(seed))
    second = policy.delay(attempt, random.Random(seed))
    direct = backoff(attempt, base, factor, cap, jitter, random.Random(seed))
    assert first == second == direct


def test_jitter_actually_varies_the_delay() -> None:
    """With jitter > 0 and a delay below cap, different seeds give different delays."""
    policy = RetryPolicy(base=10.0, factor=2.0, cap=300.0, jitter=0.5)
    delays = {policy.delay(2, random.Random(seed)) for seed in range(20)}
    assert len(delays) > 1
    assert all(10.0 <= d <= 30.0 for d in delays)


@settings(max_examples=200)
@given(attempt=attempts, factor=factors, cap=caps, jitter=jitters, seed=seeds)
def test_zero_base_is_always_zero(
    attempt: int, factor: float, cap: float, jitter: float, seed: int
) -> None:
    """With base 0 every attempt is retried at once, whatever the factor, cap or jitter."""
    assert backoff(attempt, 0.0, factor, cap, jitter, random.Random(seed)) == 0.0


def test_boolean_max_attempts_is_refused() -> None:
    """max_attempts=True is not an attempt count, even though bool subclasses int."""
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=True)


def test_a_backoff_cap_beyond_ten_years_is_refused() -> None:
    """A cap whose due dates would overflow the calendar is refused when declared."""
    with pytest.raises(ValueError, match="cap"):
        RetryPolicy(cap=1e12)
