"""Who may do what on the dashboard: operator tokens, signed session cookies, and the CSRF
token each form carries. Standard library only (``hmac``, ``secrets``).

- Actions (requeue, cancel, bulk) need a signed-in operator and, on every POST, the form's
  CSRF token, which is an HMAC of the session: a page of another site can neither read it
  nor forge it, and the session cookie is ``SameSite=Strict`` besides.
- A token is either bound to one operator's name (a tokens file: ``name token`` per line),
  or shared (``--token``): then the sign-in asks for a name, and that name is what the
  job's history records.
- ``private``: viewing needs a sign-in too (always so when serving beyond localhost).
- ``read_only``: no action at all, whoever asks.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

COOKIE = "jobcharts_session"
SESSION_SECONDS = 12 * 3600
NAME_MAX = 64


class AccessError(ValueError):
    """A tokens file or an option that cannot be used as given."""


@dataclass(frozen=True)
class Operator:
    """A signed-in person: the name recorded in the histories of the jobs they act on."""

    name: str


@dataclass
class Access:
    """The dashboard's access rules (see the module's docstring)."""

    tokens: dict[str, str | None] = field(default_factory=dict)  # token -> bound name
    read_only: bool = False
    private: bool = False
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def login_enabled(self) -> bool:
        return bool(self.tokens)

    @property
    def actions_enabled(self) -> bool:
        """Whether anyone can act at all (a token exists and the mode allows it)."""
        return self.login_enabled and not self.read_only

    def sign_in(self, token: str, name: str) -> Operator | None:
        """The operator ``token`` names (None: no such token). A shared token takes the
        name typed at sign-in; a bound one its own name."""
        for known, bound in self.tokens.items():
            if _same(known, token):
                chosen = bound or clean_name(name)
                return Operator(chosen) if chosen else None
        return None

    def cookie(self, operator: Operator, now: float | None = None) -> str:
        """The signed session cookie's value: the name (base64url: any script fits a
        cookie), expiry, signature."""
        expires = int((now or time.time()) + SESSION_SECONDS)
        name = base64.urlsafe_b64encode(operator.name.encode()).decode().rstrip("=")
        body = f"{name}|{expires}"
        return f"{body}|{self._sign('session', body)}"

    def operator(self, cookie: str | None, now: float | None = None) -> Operator | None:
        """The operator a session cookie names, if its signature holds and it has not
        expired (anything else, however malformed, is no one)."""
        if not cookie or not cookie.isascii() or cookie.count("|") != 2:
            return None
        name, expires, signature = cookie.split("|")
        body = f"{name}|{expires}"
        if not _same(signature, self._sign("session", body)):
            return None
        if not expires.isdigit() or int(expires) < (now or time.time()):
            return None
        try:
            return Operator(base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode())
        except ValueError:
            return None

    def csrf(self, cookie: str | None) -> str:
        """The CSRF token of a session (forms carry it; POSTs must send it back)."""
        return self._sign("csrf", cookie or "")

    def csrf_ok(self, cookie: str | None, sent: str | None) -> bool:
        return bool(cookie) and bool(sent) and _same(self.csrf(cookie), sent or "")

    def _sign(self, purpose: str, body: str) -> str:
        return hmac.new(self.secret, f"{purpose}:{body}".encode(), hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    """A constant-time comparison of any two strings (non-ASCII ones included)."""
    return hmac.compare_digest(a.encode(), b.encode())


def clean_name(name: str) -> str:
    """An operator's name as recorded: printable, no separators, at most NAME_MAX long."""
    kept = "".join(c for c in name.strip() if c.isprintable() and c not in "|<>\"'")
    return kept[:NAME_MAX]


def read_tokens(path: str | Path) -> dict[str, str | None]:
    """A tokens file: one ``name token`` per line (``#`` comments, blank lines allowed).
    Refused when it has no token, a line without both, a short token, or a repeat."""
    tokens: dict[str, str | None] = {}
    text = Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise AccessError(f"{path}:{number}: expected 'name token', got {len(parts)} fields")
        name, token = parts
        check_token(token, f"{path}:{number}")
        if token in tokens:
            raise AccessError(f"{path}:{number}: this token is already given to another name")
        if clean_name(name) != name:
            raise AccessError(f"{path}:{number}: the name {name!r} has characters not allowed")
        tokens[token] = name
    if not tokens:
        raise AccessError(f"{path}: no tokens in the file")
    return tokens


def check_token(token: str, where: str = "the token") -> None:
    if len(token) < 16:
        raise AccessError(
            f"{where}: a token has at least 16 characters (try `openssl rand -hex 16`)"
        )
