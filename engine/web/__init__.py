"""The web dashboard (``jobcharts dashboard``; the ``web`` extra: Starlette, Jinja2,
uvicorn). ``create_app(engine, access=Access(...))`` is an ASGI app to serve or to mount
in your own."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.errors import MissingExtra
from engine.web.access import Access, AccessError, Operator, read_tokens

if TYPE_CHECKING:
    from engine.engine import Engine

HINT = "the dashboard needs the web extra: pip install 'jobcharts[web]'"

__all__ = ["HINT", "Access", "AccessError", "Operator", "create_app", "read_tokens"]


def create_app(
    engine: Engine,
    *,
    access: Access | None = None,
    stats_every: float = 10.0,
    allowed_hosts: Sequence[str] | None = None,
) -> Any:
    """The dashboard of ``engine`` as an ASGI (Starlette) app; see ``engine.web.app``."""
    try:
        from engine.web.app import create_app as build
    except ImportError as error:
        raise MissingExtra(f"{HINT} ({error})") from error
    return build(engine, access=access, stats_every=stats_every, allowed_hosts=allowed_hosts)
