"""The dashboard's pure helpers: what a long history shows, where a sign-in may lead."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from engine.web.views import HISTORY_HEAD, HISTORY_TAIL, history_shown, safe_next


@given(st.integers(min_value=0, max_value=3 * (HISTORY_HEAD + HISTORY_TAIL)))
def test_a_long_history_shows_its_first_and_latest_events(n: int) -> None:
    events = list(range(n))
    head, tail, hidden = history_shown(events)
    assert head + tail == events[: len(head)] + events[n - len(tail) :]
    assert len(head) + hidden + len(tail) == n
    assert len(head) + len(tail) <= HISTORY_HEAD + HISTORY_TAIL
    if hidden:
        assert head == events[:HISTORY_HEAD] and tail == events[-HISTORY_TAIL:]


def test_a_sign_in_leads_only_within_the_dashboard() -> None:
    assert safe_next("/jobs/3?x=1") == "/jobs/3?x=1"
    for target in (None, "", "https://evil.example", "//evil.example", "/\\evil", "jobs"):
        assert safe_next(target) == "/"
