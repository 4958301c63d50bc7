"""App B of the kind-ownership tests: another team's kind ``notify``, which takes a phone
number, and a compatible evolution of app A's model (a new field with a default)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from engine import Engine


class Sms(BaseModel):
    phone: str


class EmailV2(BaseModel):
    email: str
    locale: str = "en"


def build(url: str, model: type[BaseModel] = Sms, schema_change: str | None = None) -> Engine:
    engine = Engine(url)

    @engine.job(
        payload=model,
        idempotency=lambda p: f"notify:{p.model_dump_json()}",
        kind="notify",
        schema_change=schema_change,
    )
    def notify(ctx: Any, p: Any) -> None:
        return None

    return engine


app = build("sqlite:///unused-b.db")
