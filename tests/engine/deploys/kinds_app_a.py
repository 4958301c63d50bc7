"""App A of the kind-ownership tests: kind ``notify`` takes an email address."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from engine import Engine


class Email(BaseModel):
    email: str


def build(url: str) -> Engine:
    engine = Engine(url)

    @engine.job(payload=Email, idempotency=lambda p: f"notify:{p.email}", kind="notify")
    def notify(ctx: Any, p: Email) -> None:
        return None

    return engine


app = build("sqlite:///unused-a.db")  # for the command line (--db gives the URL)
