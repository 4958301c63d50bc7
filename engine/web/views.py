"""What the dashboard's pages show, as plain data (no web framework here): a filtered job
list a page at a time, the actions a job can take, the schedules' table, and the small
formatting helpers the templates use."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode

from engine import bulk, operators
from engine.engine import Engine
from engine.operators import Refused
from engine.store import JobRow
from engine.store import dashboard as reads
from engine.store.bulk import JobFilter
from engine.timetable import parse_age
from statecharts import T
from statecharts.render import age_text

PAST = {"requeue": "requeued", "cancel": "cancelled"}
HISTORY_HEAD = 20  # a long history shows its first events and its latest ones
HISTORY_TAIL = 300
T_co = TypeVar("T_co")
FILTERS = ("kind", "state", "queue", "reason", "older", "newer")
SEARCH_LIMIT = 50
COUNT_CAP = 100_000  # a bulk dry run counts the matching jobs up to this many
SEARCH_RECENT = 100_000  # the latest jobs a search by correlation id looks through


@dataclass(frozen=True)
class Listing:
    """One page of a job list: its rows, the filter as given, the cursor of the next page,
    and the search text (a search lists its matches, no filter)."""

    rows: list[JobRow]
    params: dict[str, str]
    next_after: int | None
    limit: int
    search: str | None

    def query(self, **changes: Any) -> str:
        """This list's query string with ``changes`` (None drops a field)."""
        params = {**self.params, **{k: v for k, v in changes.items()}}
        return urlencode({k: v for k, v in params.items() if v not in (None, "")})


def window_of(request: Any, windows: Mapping[str, int]) -> str:
    window = str(request.query_params.get("window", "1h"))
    return window if window in windows else "1h"


def job_filter(engine: Engine, params: Mapping[str, str]) -> JobFilter:
    """The JobFilter a list's query asks for; ValueError names a field it cannot use."""
    now = engine.now()
    fields: dict[str, Any] = {}
    for name, target in (("kind", "kinds"), ("state", "states"), ("queue", "queues")):
        value = (params.get(name) or "").strip()
        if value:
            fields[target] = tuple(v.strip() for v in value.split(",") if v.strip())
    reason = (params.get("reason") or "").strip()
    if reason:
        fields["reasons"] = (reason,)
    older = (params.get("older") or "").strip()
    if older:  # unchanged for at least this long
        fields["updated_before"] = now - timedelta(seconds=_age(older, "older"))
    newer = (params.get("newer") or "").strip()
    if newer:  # changed within this long
        fields["updated_since"] = now - timedelta(seconds=_age(newer, "newer"))
    if fields.get("states"):
        bulk.check_states(engine, fields["states"])
    return JobFilter(**fields)


def _age(text: str, name: str) -> float:
    try:
        return parse_age(text)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def filter_query(params: Mapping[str, str]) -> str:
    """The filter fields of a query string (a bulk action's filter, carried in its form)."""
    return urlencode({k: params[k] for k in FILTERS if params.get(k)})


def listing(engine: Engine, params: Mapping[str, str]) -> Listing:
    """A page of the jobs ``params`` ask for: a search (``q``: an id, an idempotency key or
    a correlation id), or a filter a page at a time (``after``: the cursor)."""
    kept = {k: str(params[k]) for k in (*FILTERS, "limit") if params.get(k)}
    limit = int(params.get("limit") or 50)
    if limit not in (25, 50, 100, 200):
        raise ValueError(f"limit is one of 25, 50, 100, 200, got {limit}")
    search = (params.get("q") or "").strip()
    if search:
        kinds = reads.known_kinds(engine.store)
        rows = reads.job_search(
            engine.store, search, kinds=kinds, limit=SEARCH_LIMIT, recent=SEARCH_RECENT
        )
        return Listing(rows, {"q": search}, None, limit, search)
    after_text = params.get("after")
    after = int(after_text) if after_text and after_text.isdigit() else None
    page = bulk.page(engine, job_filter(engine, params), after=after, limit=limit)
    return Listing(page.rows, kept, page.next_after, limit, None)


def job_actions(engine: Engine, job_id: int) -> dict[str, str | None]:
    """Per action (requeue, cancel): None when the job can take it now, else why not."""
    row = engine.store.job_get(job_id)
    found: dict[str, str | None] = {}
    for action, trigger in (("requeue", T.REQUEUE), ("cancel", T.CANCEL)):
        if row is None:
            found[action] = "no such job"
            continue
        try:
            operators.plan(engine, row, str(trigger))
            found[action] = None
        except Refused as refused:
            found[action] = refused.why
    return found


def act_on_job(engine: Engine, job_id: int, action: str, detail: dict[str, str]) -> str:
    """Requeue or cancel one job, recording ``detail`` (who, from where) in its event;
    returns the state it moved to, or "requested" (a cancel its handler honours)."""
    trigger = bulk.ACTIONS.get(action)
    if trigger is None:
        raise ValueError(f"unknown action {action!r}; actions: {', '.join(bulk.ACTIONS)}")
    for _ in range(operators.CANCEL_ATTEMPTS):
        row = engine.store.job_get(job_id)
        if row is None:
            raise ValueError(f"no job with id {job_id}")
        try:
            return operators.perform(engine, operators.plan(engine, row, str(trigger), detail))
        except operators.Changed:
            continue  # it moved between the read and the write: look again
    raise operators.kept_changing(str(trigger), job_id)


def history_shown(history: Sequence[T_co]) -> tuple[list[T_co], list[T_co], int]:
    """The events a job's page draws: all of a short history; of a long one (a poller
    that checked for a week) the first HISTORY_HEAD and the latest HISTORY_TAIL, with
    how many are left out between them."""
    if len(history) <= HISTORY_HEAD + HISTORY_TAIL:
        return list(history), [], 0
    hidden = len(history) - HISTORY_HEAD - HISTORY_TAIL
    return list(history[:HISTORY_HEAD]), list(history[-HISTORY_TAIL:]), hidden


@dataclass(frozen=True)
class ScheduleRow:
    name: str
    kind: str
    spec: str
    policy: str
    last_slot: datetime | None
    last_job_id: int | None
    last_job_state: str | None
    next_fire: datetime | None


def schedule_rows(engine: Engine) -> list[ScheduleRow]:
    """Each cron schedule and poller with its last slot, its last job and its next fire."""
    from engine.errors import NoSchema
    from engine.store.schedules import ScheduleStore

    try:
        stored = ScheduleStore(engine.store).listing()
    except NoSchema:
        stored = {}
    now = engine.now()
    rows = []
    for schedule in engine.schedules:
        kept = stored.get(schedule.name)
        last = kept.last_slot if kept is not None else None
        rows.append(
            ScheduleRow(
                schedule.name,
                schedule.kind,
                schedule.spec,
                schedule.policy.describe(),
                last,
                kept.last_job_id if kept is not None else None,
                kept.last_job_state if kept is not None else None,
                schedule.trigger.next_after(last or now),
            )
        )
    return rows


def safe_next(target: str | None) -> str:
    """A redirect target inside the dashboard (a path, never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def when(value: datetime | None) -> str:
    return value.isoformat(sep=" ", timespec="seconds") if value else "-"


def ago(value: datetime | timedelta | None, now: datetime | None = None) -> str:
    """``"3m 20s"`` since ``value`` (or a span)."""
    if value is None:
        return "-"
    span = value if isinstance(value, timedelta) else (now or datetime.now(value.tzinfo)) - value
    return age_text(span.total_seconds())


def json_text(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
