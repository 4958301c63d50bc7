"""Badges for the review diagram: each step's retry policy and timeout, which only the
engine knows (the chart alone does not), as text the renderer draws in the state.

``badges(spec)`` -> ``{"charge": "3 attempts, 1s x2, 30s", ...}``: attempts (the first
run included), the first backoff and its factor (``up to`` the cap when the cap is
reached before the last attempt), the handler's timeout.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable

from engine.registry import JobSpec, StepSpec
from engine.retry import NoRetry, RetryPolicy
from statecharts.render import span

VARIES = "retries vary by kind (jobcharts describe)"


def policy_text(policy: RetryPolicy, timeout: float) -> str:
    """``3 attempts, 1s x2, 30s``; a ``NoRetry`` gives its reason on a second line."""
    if isinstance(policy, NoRetry):
        reason = textwrap.shorten(policy.reason, width=80, placeholder="...")
        return f"1 attempt, {span(timeout)}\n" + "\n".join(
            textwrap.wrap(f"no retry: {reason}", width=48)
        )
    attempts = f"{policy.max_attempts} attempt" + ("s" if policy.max_attempts != 1 else "")
    parts = [attempts]
    if policy.max_attempts > 1:
        parts.append(_backoff(policy))
    parts.append(span(timeout))
    text = ", ".join(parts)
    if policy.permanent:
        text += "\npermanent: " + ", ".join(e.__name__ for e in policy.permanent)
    return text


def _backoff(policy: RetryPolicy) -> str:
    if policy.base == 0:
        return "no backoff"
    text = f"{span(policy.base)} x{policy.factor:g}" if policy.factor != 1 else span(policy.base)
    longest = policy.base * policy.factor ** max(policy.max_attempts - 2, 0)
    if longest > policy.cap:
        text += f" up to {span(policy.cap)}"
    return text


def step_badge(step: StepSpec) -> str:
    return policy_text(step.retry, step.timeout)


def badges(spec: JobSpec) -> dict[str, str]:
    """State -> the badge of the handler that runs in it, for one job kind."""
    return {state: step_badge(step) for state, step in spec.steps.items()}


def chart_badges(specs: Iterable[JobSpec], chart_name: str) -> dict[str, str]:
    """The badges of a chart shared by several kinds: a state's badge when every kind of
    the chart agrees on it, else a pointer to ``jobcharts describe``."""
    found: dict[str, set[str]] = {}
    for spec in specs:
        if spec.chart.name == chart_name:
            for state, text in badges(spec).items():
                found.setdefault(state, set()).add(text)
    return {state: texts.pop() if len(texts) == 1 else VARIES for state, texts in found.items()}
