"""What the dashboard's pages show, as plain data (no web framework here): a filtered job
list a page at a time, the actions a job can take, the schedules' table, and the small
formatting helpers the templates use."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

from engine import bulk, operators
from engine.engine import Engine
from engine.errors import JobNotFound
from engine.operators import Refused
from engine.store import JobRow
from engine.store import dashboard as reads
from engine.store.bulk import JobFilter
from engine.timetable import parse_age
from engine.view import EventView, JobView, view_of
from statecharts import T
from statecharts.render import age_text

PAST = {"requeue": "requeued", "cancel": "cancelled"}
HISTORY_HEAD = 20  # a long history shows its first events and its latest ones
HISTORY_TAIL = 300
FAILURES = frozenset({str(T.FAIL), str(T.FAIL_PERMANENT), str(T.EXPIRE)})  # failed attempts
FILTERS = ("kind", "state", "queue", "reason", "older", "newer")
PAGE_SIZES = (25, 50, 100, 200)
SEARCH_LIMIT = 50
SCAN_WINDOW = 100_000  # ids a page of a filter no index holds searches
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
    searched_to: int | None = None  # the page's window ran out here (see bulk.page)

    def query(self, **changes: Any) -> str:
        """This list's query string with ``changes`` (None drops a field)."""
        params = {**self.params, **changes}
        return urlencode({k: v for k, v in params.items() if v not in (None, "")})


MAX_VALUES = 20  # values of one filter field (each is read as its own partition)
MAX_ID = 2**63 - 1  # the largest id either backend stores


def job_id_ok(value: int) -> bool:
    return 1 <= value <= MAX_ID


def job_id(value: int) -> int:
    """``value``, or 0 (no job's id) when it cannot be one (both backends store 64-bit
    ids: a larger one would fail in the driver)."""
    return value if job_id_ok(value) else 0


def text_value(name: str, value: str) -> str:
    """A filter or search value as given, refused (ValueError) when it holds control
    characters (PostgreSQL stores no NUL in text; nothing legitimate has them)."""
    value = value.strip()
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{name}: control characters are not allowed")
    if len(value) > 500:
        raise ValueError(f"{name}: at most 500 characters")
    return value


def values_of(name: str, value: str) -> tuple[str, ...]:
    """A comma list, each value once, at most MAX_VALUES of them."""
    found = tuple(dict.fromkeys(v.strip() for v in text_value(name, value).split(",") if v.strip()))
    if len(found) > MAX_VALUES:
        raise ValueError(f"{name}: at most {MAX_VALUES} values, got {len(found)}")
    return found


def job_filter(engine: Engine, params: Mapping[str, str]) -> JobFilter:
    """The JobFilter a list's query asks for; ValueError names a field it cannot use."""
    now = engine.now()
    fields: dict[str, Any] = {}
    for name, target in (("kind", "kinds"), ("state", "states"), ("queue", "queues")):
        found = values_of(name, params.get(name) or "")
        if found:
            fields[target] = found
    reason = text_value("reason", params.get("reason") or "")
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
    limit_text = params.get("limit") or "50"
    if limit_text not in {str(n) for n in PAGE_SIZES}:
        sizes = ", ".join(map(str, PAGE_SIZES))
        raise ValueError(f"limit is one of {sizes}, got {limit_text!r}")
    limit = int(limit_text)
    search = text_value("search", params.get("q") or "")
    if search:
        kinds = reads.known_kinds(engine.store)
        rows = reads.job_search(
            engine.store, search, kinds=kinds, limit=SEARCH_LIMIT, recent=SEARCH_RECENT
        )
        return Listing(rows, {"q": search}, None, limit, search)
    after_text = params.get("after") or ""
    after = None
    if after_text:
        if not (after_text.isascii() and after_text.isdigit()) or int(after_text) > MAX_ID + 1:
            raise ValueError(f"after is a job id (the cursor of a page), got {after_text!r}")
        after = int(after_text)
    f = job_filter(engine, params)
    page = bulk.page(engine, f, after=after, limit=limit, window=SCAN_WINDOW)
    return Listing(page.rows, kept, page.next_after, limit, None, page.searched_to)


def job_actions(engine: Engine, row: JobRow) -> dict[str, str | None]:
    """Per action (requeue, cancel): None when the job as read can take it, else why not."""
    found: dict[str, str | None] = {}
    for action, trigger in (("requeue", T.REQUEUE), ("cancel", T.CANCEL)):
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
    if not job_id_ok(job_id):
        raise JobNotFound(f"no job with id {job_id}")
    return operators.act(engine, job_id, str(trigger), detail)


@dataclass(frozen=True)
class JobPage:
    """A job as its page shows it, its history bounded: the row, the view (its history
    the first HISTORY_HEAD and latest HISTORY_TAIL events), those two parts, how many
    events are left out between them, and (when some are) the totals its answers count
    over the whole history (``JobView.explain``'s ``starts_total``, ``failures_total``)."""

    row: JobRow
    view: JobView
    head: list[EventView]
    tail: list[EventView]
    hidden: int
    totals: dict[str, int]


def read_job(engine: Engine, job_id: int) -> JobPage | None:
    """The job's page as read now (None: no such job)."""
    store = engine.store
    row = store.job_get(job_id)
    if row is None:
        return None
    heads, tails, total = store.job_events_ends(job_id, HISTORY_HEAD, HISTORY_TAIL)
    view = view_of(row, heads + tails)
    head, tail = list(view.history[: len(heads)]), list(view.history[len(heads) :])
    hidden = total - len(heads) - len(tails)
    totals: dict[str, int] = {}
    if hidden:
        counts = store.job_event_counts(job_id)
        totals["starts_total"] = sum(n for (t, _, _), n in counts.items() if t == T.START)
        totals["failures_total"] = sum(n for (t, _, _), n in counts.items() if t in FAILURES)
    return JobPage(row, view, head, tail, hidden, totals)


def base(request: Any) -> str:
    """The path the dashboard is mounted at ("" at the root): every link starts with it."""
    return str(request.scope.get("root_path", ""))


def here(request: Any) -> str:
    """The page's own path and query, relative to the dashboard (mounted or not): where a
    sign-in returns to."""
    root = base(request)
    path = str(request.url.path)
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    query = str(request.url.query)
    return path + (f"?{query}" if query else "")


def foreign_origin(request: Any) -> str | None:
    """The Origin of a request from another site (None: none given, or this host). The
    scheme is not compared: behind a TLS proxy the page is https and the request http."""
    origin = request.headers.get("origin")
    if not origin:
        return None
    host = urlsplit(origin).netloc
    return None if host == request.url.netloc else str(origin)


def over_https(request: Any) -> bool:
    """Whether the browser talks https (directly, or to a proxy that says so)."""
    forwarded = str(request.headers.get("x-forwarded-proto", "")).split(",")[0].strip()
    return bool(request.url.scheme == "https" or forwarded == "https")


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
