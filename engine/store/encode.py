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


# The last value written and its text: a claim or commit writes the same instant into
# several columns and events of every job of its batch (one entry, swapped atomically).
_last: list[tuple[datetime | None, str | None]] = [(None, None)]


def sqlite_time(value: datetime | None) -> str | None:
    """Naive UTC text with microseconds (SQLAlchemy's SQLite DateTime), or NULL."""
    if value is None:
        return None
    last = _last[0]
    if last[0] is value:
        return last[1]
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: jobcharts stores aware UTC datetimes")
    utc = value if value.tzinfo is UTC else value.astimezone(UTC)
    text = utc.replace(tzinfo=None).isoformat(" ", "microseconds")
    _last[0] = (value, text)
    return text
