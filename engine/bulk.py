"""Listing jobs a page at a time, and operator actions (requeue, cancel) over many jobs.

A bulk action names jobs by id or by a ``JobFilter``. ``plan`` says what it would do and
changes nothing (how many jobs match, per state, and the verdict on the first ones);
``apply`` does it in batches: each batch of ``batch_size`` jobs is read in id order
(keyset pagination, never OFFSET), planned job by job exactly as the one-job operators
plan (``engine.operators``: the chart's transition as a compare-and-set, a requeue's
dedupe-key rules, the cancel rule for a job a handler holds -> "requested"), then written
in one short transaction. A job that cannot take the action is counted and reported as
skipped with the reason; it never stops the run. A job that changed between the read and
the write is read again (and skipped if it no longer matches the filter). A filter's run
stops at the highest id that existed when it began: jobs enqueued meanwhile are left alone.

Each move's event records ``{"by": "operator", "bulk": <run id>, "filter": <filter>}``.

Everything here takes a ``Runtime`` (an ``Engine`` is one), as the lifecycle verbs do.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine import operators
from engine.operators import Action, Refused
from engine.runtime import Runtime
from engine.store import JobRow
from engine.store import bulk as sql
from engine.store.bulk import JobFilter, OperatorWrite
from statecharts import T, lifecycle

__all__ = [
    "ACTIONS",
    "DEFAULT_BATCH",
    "MAX_PAGE",
    "JobFilter",
    "Page",
    "Plan",
    "Report",
    "Skip",
    "UnknownState",
    "Verdict",
    "apply",
    "check_states",
    "known_states",
    "page",
    "plan",
    "row_json",
    "trigger_of",
]

ACTIONS = {"requeue": T.REQUEUE, "cancel": T.CANCEL}
DEFAULT_BATCH = 500
MAX_PAGE = 1000
REREADS = operators.CANCEL_ATTEMPTS  # how often a job that keeps changing is read again
NO_LONGER_MATCHES = "no_longer_matches"
ANY = JobFilter()  # no condition: the reads of named jobs pass their ids chunk by chunk


class UnknownState(ValueError):
    """A state no chart of the app has (and no job is in); ``known`` lists the ones that
    are."""

    def __init__(self, state: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown state {state!r}; known states: {', '.join(known)}")
        self.state = state
        self.known = list(known)


# -- listing ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Page:
    """One page of a listing, newest first; ``next_after`` is the cursor of the next page
    (pass it as ``after``), None on the last page. ``searched_to``: a windowed page that
    ran out of its window first: ids above it were searched, the next page goes on."""

    rows: list[JobRow]
    next_after: int | None
    searched_to: int | None = None


def page(
    rt: Runtime,
    f: JobFilter,
    *,
    after: int | None = None,
    limit: int = 50,
    window: int | None = None,
) -> Page:
    """Jobs matching ``f``, newest first: those with ids below ``after`` (the previous
    page's cursor), at most ``limit`` (1 to ``MAX_PAGE``).

    ``window``: when ``f`` filters on what no index holds (queue, reason, changed since),
    search at most this many ids per page, so a filter that matches almost nothing costs
    a window, not the table; a page that runs out of its window says so (``searched_to``)
    and its cursor goes on below it."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit is between 1 and {MAX_PAGE}, got {limit}")
    floor = None
    if window is not None and sql.unindexed(f):
        start = after if after is not None else sql.job_max_id(rt.store) + 1
        floor = max(start - 1 - window, 0)
    rows = sql.job_page(rt.store, f, limit=limit + 1, below=after, above=floor)
    if len(rows) > limit:  # one more row than shown: there is a next page
        return Page(rows[:limit], rows[limit - 1].id)
    if floor:  # the window ran out: the jobs below it are still to search
        return Page(rows, floor + 1, searched_to=floor + 1)
    return Page(rows, None)


def chart_states(rt: Runtime) -> set[str]:
    """The states of the registered charts (the built-in lifecycle's without any)."""
    specs = rt.registry.specs
    if not specs:
        return set(lifecycle().state_names)
    return {state for spec in specs for state in spec.chart.state_names}


def known_states(rt: Runtime) -> list[str]:
    """The states a job can be in here: the charts' and any a job is in (a state a deploy
    removed, while jobs are still stranded there)."""
    return sorted(chart_states(rt) | sql.job_states_present(rt.store))


def check_states(rt: Runtime, states: Sequence[str]) -> None:
    """Refuse (``UnknownState``) a state no chart has and no job is in."""
    charts = chart_states(rt)
    unknown = [s for s in states if s not in charts]
    if not unknown:
        return
    present = sql.job_states_present(rt.store)
    for state in unknown:
        if state not in present:
            raise UnknownState(state, sorted(charts | present))


def row_json(row: JobRow) -> dict[str, Any]:
    """A job row as JSON-ready values (times as ISO 8601 text)."""

    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": row.id,
        "kind": row.kind,
        "chart": row.chart,
        "state": row.state,
        "queue": row.queue,
        "priority": row.priority,
        "attempt": row.attempt,
        "max_attempts": row.max_attempts,
        "due_at": when(row.due_at),
        "created_at": when(row.created_at),
        "updated_at": when(row.updated_at),
        "finished_at": when(row.finished_at),
        "cancel_requested_at": when(row.cancel_requested_at),
        "quarantine_reason": row.quarantine_reason,
        "last_error_class": row.last_error_class,
        "last_error_message": row.last_error_message,
        "idempotency_key": row.idempotency_key,
        "correlation_id": row.correlation_id,
    }


# -- plan (the dry run) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What the action would do to one job as read: move it to ``dest`` ("requested": ask
    its handler to stop), or skip it (``code``, ``why``)."""

    row: JobRow
    dest: str | None
    code: str | None = None
    why: str | None = None


@dataclass(frozen=True)
class Plan:
    """What an action would do, with nothing changed: ``matched`` jobs (``by_state``),
    the verdicts on the first of them in the order the action takes them (id order), and
    the ids named that are no job (``missing``)."""

    action: str
    filter: JobFilter
    matched: int
    by_state: dict[str, int]
    sample: list[Verdict]
    missing: list[int]
    capped: bool = False  # counted up to a cap: at least ``matched`` jobs match
    searched_to: int | None = None  # counted and sampled only among ids above this

    @property
    def shown_all(self) -> bool:
        return len(self.sample) >= self.matched


def plan(
    rt: Runtime,
    action: str,
    f: JobFilter,
    *,
    sample: int = 20,
    count_cap: int | None = None,
    window: int | None = None,
) -> Plan:
    """What ``action`` ("requeue" or "cancel") would do to the jobs ``f`` names; writes
    nothing. With ids, ``missing`` lists those that are no job. ``count_cap``: count a
    filter's matches only up to it (``Plan.capped`` then says there are more);
    ``window``: with a filter on what no index holds, count and sample only among the
    latest ``window`` ids (``Plan.searched_to``; the action itself takes every job)."""
    trigger = trigger_of(action, f)
    if not f.ids:
        above = 0
        if window is not None and sql.unindexed(f):
            above = max(sql.job_max_id(rt.store) - window, 0)
        by_state = sql.job_count_states(rt.store, f, cap=count_cap, above=above)
        matched = sum(by_state.values())
        capped = count_cap is not None and matched > count_cap
        rows = sql.job_scan(rt.store, f, limit=sample, above=above) if sample > 0 else []
        verdicts = [verdict(rt, row, trigger) for row in rows]
        shown = min(matched, count_cap or matched)
        return Plan(
            action, f, shown, by_state, verdicts, [], capped, (above + 1) if above else None
        )
    counts: Counter[str] = Counter()
    verdicts = []
    missing: list[int] = []
    for rows, absent in _batches(rt, f, DEFAULT_BATCH):
        counts.update(row.state for row in rows)
        verdicts += [verdict(rt, row, trigger) for row in rows[: sample - len(verdicts)]]
        missing += absent
    return Plan(action, f, sum(counts.values()), dict(counts), verdicts, missing)


def verdict(rt: Runtime, row: JobRow, trigger: str) -> Verdict:
    """The action's verdict on one job as read (a key taken by another job shows only
    when the action is applied)."""
    try:
        return Verdict(row, operators.plan(rt, row, trigger).dest)
    except Refused as refused:
        return Verdict(row, None, refused.code, refused.why)


# -- apply -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Skip:
    """A job the action skipped: its id, its state as last read (None: no such job), why."""

    job_id: int
    state: str | None
    code: str
    why: str


@dataclass
class Report:
    """What an applied action did: ``moved`` counts jobs per state they moved to,
    ``requested`` the cancels asked of running handlers, ``skipped`` the jobs that could
    not take it (per reason in ``skip_codes``; the first ``keep`` of them in ``skips``);
    ``done``: the first ``keep`` jobs that took it, with the state each moved to (or
    "requested")."""

    action: str
    run: str
    filter: JobFilter
    keep: int = 100
    matched: int = 0
    batches: int = 0
    moved: Counter[str] = field(default_factory=Counter)
    requested: int = 0
    skipped: int = 0
    skip_codes: Counter[str] = field(default_factory=Counter)
    skips: list[Skip] = field(default_factory=list)
    done: list[tuple[int, str]] = field(default_factory=list)  # the first ``keep``: id, dest

    @property
    def changed(self) -> int:
        """Jobs moved, or asked to stop."""
        return sum(self.moved.values()) + self.requested

    def skip(self, skip: Skip) -> None:
        self.skipped += 1
        self.skip_codes[skip.code] += 1
        if len(self.skips) < self.keep:
            self.skips.append(skip)


def apply(
    rt: Runtime,
    action: str,
    f: JobFilter,
    *,
    batch_size: int = DEFAULT_BATCH,
    keep: int = 100,
    on_batch: Callable[[Report], None] | None = None,
    run: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> Report:
    """Apply ``action`` ("requeue" or "cancel") to the jobs ``f`` names, ``batch_size``
    jobs per transaction; returns the report (``on_batch`` sees it after each batch).

    ``run`` names the run in each event's detail (a fresh id by default); ``detail`` adds
    to each event's detail (who did it, from where)."""
    trigger = trigger_of(action, f)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    report = Report(action, run or uuid.uuid4().hex[:12], f, keep=keep)
    extra: dict[str, Any] = {**(detail or {}), "bulk": report.run}
    if not f.ids:
        extra["filter"] = f.describe()
    # Named jobs are reported one by one, as the one-job operators do; a filter's many
    # jobs at debug level, with a line per batch.
    level = "info" if f.ids else "debug"
    for rows, missing in _batches(rt, f, batch_size):
        for job_id in missing:
            report.skip(Skip(job_id, None, Refused.NOT_FOUND, f"no job with id {job_id}"))
        report.matched += len(rows)
        _apply_batch(rt, trigger, f, rows, extra, level, report)
        report.batches += 1
        _progress(rt, "jobs.bulk_batch", "debug", report)
        if on_batch is not None:
            on_batch(report)
    _progress(rt, "jobs.bulk_done", "info", report)
    return report


def _progress(rt: Runtime, name: str, level: str, report: Report) -> None:
    rt.telemetry.emit(
        name,
        level,
        action=report.action,
        run=report.run,
        filter=report.filter.describe(),
        batches=report.batches,
        matched=report.matched,
        moved=dict(report.moved),
        requested=report.requested,
        skipped=report.skipped,
    )


def _batches(rt: Runtime, f: JobFilter, size: int) -> Iterator[tuple[list[JobRow], list[int]]]:
    """The matching rows in id order, ``size`` at a time, with the named ids that are no
    job; a filter stops at the highest id when it began."""
    if f.ids:
        for chunk in _chunks(sorted(set(f.ids)), size):
            rows = sql.job_scan(rt.store, ANY, limit=len(chunk), ids=chunk)
            found = {row.id for row in rows}
            yield rows, [i for i in chunk if i not in found]
        return
    upto = sql.job_max_id(rt.store)
    above = 0
    while True:
        rows = sql.job_scan(rt.store, f, limit=size, above=above, upto=upto)
        if not rows:
            return
        yield rows, []
        if len(rows) < size:
            return
        above = rows[-1].id


def _apply_batch(
    rt: Runtime,
    trigger: str,
    f: JobFilter,
    rows: list[JobRow],
    detail: dict[str, Any],
    level: str,
    report: Report,
) -> None:
    """Plan and write one batch; jobs that changed meanwhile are read again and retried."""
    pending = rows
    for _ in range(REREADS):
        actions: list[Action] = []
        for row in pending:
            try:
                actions.append(operators.plan(rt, row, trigger, detail))
            except Refused as error:
                report.skip(Skip(row.id, row.state, error.code, error.why))
        results = sql.job_operator_writes(rt.store, [_write(a) for a in actions])
        changed: dict[int, JobRow] = {}
        for action, result in zip(actions, results, strict=True):
            row = action.row
            if result == row.id:
                if action.move is None:
                    report.requested += 1
                else:
                    report.moved[action.dest] += 1
                if len(report.done) < report.keep:
                    report.done.append((row.id, action.dest))
                operators.performed(rt, action, level=level, run=report.run)
            elif result == 0:
                changed[row.id] = row
            else:
                refused = operators.key_taken(row, result)
                report.skip(Skip(row.id, row.state, refused.code, refused.why))
        if not changed:
            return
        again = ANY if f.ids else f  # (named jobs: ``ids`` alone restricts the read)
        pending = sql.job_scan(rt.store, again, limit=len(changed), ids=sorted(changed))
        for job_id in sorted(set(changed) - {row.id for row in pending}):
            was = changed[job_id]
            why = (
                f"it was deleted meanwhile (it was {was.state!r})"
                if f.ids
                else f"it changed meanwhile and no longer matches the filter ({was.state!r})"
            )
            report.skip(Skip(job_id, was.state, NO_LONGER_MATCHES, why))
        if not pending:
            return
    for row in pending:
        refused = operators.kept_changing(trigger, row.id)
        report.skip(Skip(row.id, row.state, refused.code, refused.why))


def _write(action: Action) -> OperatorWrite:
    return OperatorWrite(
        action.row, action.at, action.move, action.key, action.key_expires_at, action.by
    )


def trigger_of(action: str, f: JobFilter) -> str:
    """The trigger of ``action`` over ``f``; ValueError for an unknown action or a filter
    naming every job (checked before a run starts)."""
    trigger = ACTIONS.get(action)
    if trigger is None:
        raise ValueError(f"action is one of {sorted(ACTIONS)}, got {action!r}")
    if f.empty:
        raise ValueError(
            f"{action} of every job is not a bulk action: name job ids or give a filter"
        )
    return str(trigger)


def _chunks(values: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]
