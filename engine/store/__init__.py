"""The only package that speaks SQL: the Store, its plain typed rows, the schema and its
migrations, the schedules table, and PostgreSQL's LISTEN/NOTIFY wake-ups."""

from engine.store.connect import DEFAULT_URL, redact, resolve_url, sqlite_path
from engine.store.rows import (
    EventRecord,
    EventRow,
    FirstSeen,
    JobRow,
    KeyRow,
    Move,
    NewJob,
    ScheduleListing,
    ScheduleState,
)
from engine.store.store import Store

__all__ = [
    "DEFAULT_URL",
    "EventRecord",
    "EventRow",
    "FirstSeen",
    "JobRow",
    "KeyRow",
    "Move",
    "NewJob",
    "ScheduleListing",
    "ScheduleState",
    "Store",
    "redact",
    "resolve_url",
    "sqlite_path",
]
