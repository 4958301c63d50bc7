"""The dashboard's pure helpers: where a sign-in may lead."""

from __future__ import annotations

from engine.web.views import safe_next


def test_a_sign_in_leads_only_within_the_dashboard() -> None:
    assert safe_next("/jobs/3?x=1") == "/jobs/3?x=1"
    for target in (None, "", "https://evil.example", "//evil.example", "/\\evil", "jobs"):
        assert safe_next(target) == "/"
