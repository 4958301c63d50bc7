"""Values as the driver-SQL paths write them (enqueue, compare-and-set): JSON text, and
on SQLite the datetime text SQLAlchemy's DateTime stores, so both paths read back alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import partial
from typing import Any

dumps = partial(json.dumps, allow_nan=False, separators=(",", ":"))


def json_text(value: Any) -> str | None:
    """JSON text, or SQL NULL for None."""
    return None if value is None else dumps(value)


def sqlite_time(value: datetime | None) -> str | None:
    """Naive UTC text with microseconds (SQLAlchemy's SQLite DateTime), or NULL."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: jobcharts stores aware UTC datetimes")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
