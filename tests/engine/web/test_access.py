"""The dashboard's access rules without a server: signed session cookies, CSRF tokens
bound to their session, token files, and names as recorded."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.web.access import (
    SESSION_SECONDS,
    Access,
    AccessError,
    Operator,
    clean_name,
    read_tokens,
)

SHARED = "a-shared-token-of-length"
ACCESS = Access(tokens={SHARED: None, "bob-has-his-own-token": "bob"})
COOKIE = ACCESS.cookie(Operator("alice"))


def test_a_shared_token_takes_the_name_given_and_a_personal_one_its_own() -> None:
    assert ACCESS.sign_in(SHARED, " alice ") == Operator("alice")
    assert ACCESS.sign_in(SHARED, "") is None  # a shared token needs a name
    assert ACCESS.sign_in("bob-has-his-own-token", "mallory") == Operator("bob")
    assert ACCESS.sign_in("not-a-token-at-all", "alice") is None
    assert Access().sign_in("", "x") is None and not Access().actions_enabled


def test_a_cookie_names_its_operator_until_it_expires() -> None:
    assert ACCESS.operator(COOKIE) == Operator("alice")
    later = time.time() + SESSION_SECONDS + 1
    assert ACCESS.operator(COOKIE, now=later) is None
    other = Access(tokens={SHARED: None})  # another process: another secret
    assert other.operator(COOKIE) is None


@given(st.integers(min_value=0, max_value=len(COOKIE) - 1), st.characters(codec="ascii"))
def test_any_change_to_a_cookie_is_refused(position: int, char: str) -> None:
    changed = COOKIE[:position] + char + COOKIE[position + 1 :]
    if changed != COOKIE:
        assert ACCESS.operator(changed) is None


def test_a_csrf_token_belongs_to_one_session() -> None:
    token = ACCESS.csrf(COOKIE)
    assert ACCESS.csrf_ok(COOKIE, token)
    assert not ACCESS.csrf_ok(COOKIE, token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not ACCESS.csrf_ok(ACCESS.cookie(Operator("bob")), token)
    assert not ACCESS.csrf_ok(None, token) and not ACCESS.csrf_ok(COOKIE, None)


def test_names_are_recorded_plain() -> None:
    assert clean_name(' <b>eve</b> | "x" ') == "beve/b  x"
    assert len(clean_name("n" * 500)) == 64


def test_a_tokens_file(tmp_path: Path) -> None:
    good = tmp_path / "tokens"
    good.write_text("# operators\nalice alice-token-0123456789\n\nbob   bob-token-0123456789ab\n")
    assert read_tokens(good) == {
        "alice-token-0123456789": "alice",
        "bob-token-0123456789ab": "bob",
    }
    for text, why in (
        ("", "no tokens"),
        ("alice\n", "expected 'name token'"),
        ("alice short\n", "at least 16 characters"),
        ("a same-token-0123456789\nb same-token-0123456789\n", "already given"),
        ("<a> token-0123456789abcdef\n", "not allowed"),
    ):
        bad = tmp_path / "bad"
        bad.write_text(text)
        with pytest.raises(AccessError, match=why):
            read_tokens(bad)
