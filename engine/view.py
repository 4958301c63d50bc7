"""Read models: a job as operators see it, its answers to the four questions, and the
schedules' table."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.errors import JobNotFound, NoSchema
from engine.moves import SET_ASIDE
from engine.runtime import Runtime
from engine.store import EventRecord, JobRow, Store
from engine.store.rows import ScheduleListing
from engine.strays import judge
from engine.timetable import seconds_text
from statecharts import Chart, StateKind, Step, T
from statecharts.render import Overlay

if TYPE_CHECKING:
    from engine.engine import Engine


@dataclass(frozen=True)
class ErrorInfo:
    """The last failure of a job."""

    error_class: str
    message: str
    traceback: str


@dataclass(frozen=True)
class EventView:
    """One persisted transition of a job."""

    trigger: str
    from_state: str | None
    to_state: str
    attempt: int
    at: datetime
    worker: str | None
    detail: dict[str, Any] | None

    @property
    def step(self) -> Step:
        detail = self.detail or {}
        switch = detail.get("chart_version")
        return Step(
            self.trigger,
            self.from_state,
            self.to_state,
            versions=(switch[0], switch[1]) if isinstance(switch, list) else None,
            override=self.trigger == SET_ASIDE or "off_chart" in detail,
        )


@dataclass(frozen=True)
class JobView:
    """A job's persisted state and history."""

    id: int
    kind: str
    chart: str
    state: str
    payload: dict[str, Any]
    result: Any
    idempotency_key: str | None
    attempt: int
    max_attempts: int
    priority: int
    queue: str
    due_at: datetime | None
    lease_expires_at: datetime | None
    started_at: datetime | None
    correlation_id: str
    last_error: ErrorInfo | None
    quarantine_reason: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    history: tuple[EventView, ...]
    deadline: datetime | None = None  # the current state's deadline (polling states)
    cancel_requested_at: datetime | None = None  # asked to cancel while a handler held it
    chart_version: str | None = None  # the chart version of its last move
    cancel_requested_by: str | None = None  # who asked for the pending cancel, if named

    @property
    def path(self) -> list[Step]:
        return [event.step for event in self.history]

    def explain(
        self,
        chart: Chart | None,
        now: datetime,
        waiting: str | None = None,
        stray: str | None = None,
        *,
        starts_total: int | None = None,
        failures_total: int | None = None,
    ) -> dict[str, str]:
        """Answer in words: did it run, did it succeed, why did it fail, will it retry.

        ``waiting``: why a due job is not claimed now (a global limit, ``waiting_reason``);
        ``stray``: why the running chart cannot take it as it is (``stray_note``).
        ``starts_total``, ``failures_total``: the counts over the whole history when
        ``history`` holds only its ends (a page showing a long history).
        """
        kind = _kind_of(chart, self.state)
        success = chart.state(self.state).success if chart and kind is StateKind.FINAL else None
        starts = [e for e in self.history if e.trigger == T.START]
        n_starts = len(starts) if starts_total is None else starts_total
        # A handler holds the job (lifecycle ``running``, or any flow step under a lease).
        held = self.lease_expires_at is not None and kind in (StateKind.WORK, StateKind.WAIT)
        if self.attempt == 0 and not n_starts:
            ran = "No: it has not started yet" + (f"; waiting: {waiting}." if waiting else ".")
        elif held:
            lease = self.lease_expires_at
            if lease is not None and lease < now:
                ran = (
                    f"Attempt {self.attempt} of {self.max_attempts} was claimed, but its lease "
                    f"expired at {_at(lease)}: the worker crashed, hung or lost the database. "
                    "The next rescue hands it on"
                    + (" (its handler never started)." if self.started_at is None else ".")
                )
            else:
                started = "running" if self.started_at is not None else "claimed, starting"
                ran = (
                    f"Yes: attempt {self.attempt} of {self.max_attempts} is {started} now "
                    f"(lease held until {_at(lease)})."
                )
        else:
            requeued = [i for i, e in enumerate(self.history) if e.trigger == T.REQUEUE]
            since = (
                sum(1 for e in self.history[requeued[-1] :] if e.trigger == T.START)
                if requeued
                else None
            )
            ran = f"Yes: {_attempts(n_starts)} in all" + (
                f", {since} since it was last requeued." if since is not None else "."
            )
        if success is True:
            succeeded = f"Yes: it reached {self.state!r} at {_at(self.finished_at)}."
        elif kind is StateKind.FINAL:
            succeeded = f"No: it ended in {self.state!r}."
        else:
            succeeded = f"Not yet: it is {self.state!r}."
        failures = sum(1 for e in self.history if e.detail and "error" in e.detail)
        failures = failures if failures_total is None else failures_total
        ended_unfailed = success is False and not self.quarantine_reason
        if ended_unfailed and (
            self.last_error is None or any(e.trigger == T.CANCEL for e in self.history)
        ):
            why = self._ended_without_failing() + (
                f" (an earlier attempt failed: {self.last_error.error_class}: "
                f"{self.last_error.message})"
                if self.last_error is not None
                else ""
            )
        elif self.last_error is None:
            why = "It has not failed." if success is not False else _reason(self.quarantine_reason)
        elif success is True:
            why = (
                f"It succeeded after {failures} failed attempt(s); the last error was "
                f"{self.last_error.error_class}: {self.last_error.message}"
            )
        else:
            why = f"Last error: {self.last_error.error_class}: {self.last_error.message}" + (
                f" (quarantined: {_reason(self.quarantine_reason)})"
                if self.quarantine_reason
                else ""
            )
        if stray is not None:
            retry = f"Not as it is: {stray}."
        elif self.cancel_requested_at is not None and kind is not StateKind.FINAL:
            retry = (
                f"No: a cancel was requested at {_at(self.cancel_requested_at)}"
                + (f" by {self.cancel_requested_by}" if self.cancel_requested_by else "")
                + "; the job is "
                "cancelled when its running attempt ends (unless it finishes its work)."
            )
        elif kind is StateKind.FINAL:
            retry = (
                "No: it is finished."
                if success
                else "No: it is final. An operator can `jobcharts requeue` it for a fresh run."
            )
        elif held:
            left = self.max_attempts - self.attempt
            retry = f"If this attempt fails: {'yes' if left > 0 else 'no'}, {left} attempt(s) left."
        elif self.due_at is not None and self.attempt == 0 and self.history:
            wait = (self.due_at - now).total_seconds()
            deadline = f" (deadline {_at(self.deadline)})" if self.deadline else ""
            when = f"waiting: {waiting}" if waiting else _in(wait)
            retry = f"Not failed: {self.state!r} runs at {_at(self.due_at)} ({when}){deadline}."
        elif kind in (StateKind.WAIT, StateKind.WORK) and self.due_at is not None:
            wait = (self.due_at - now).total_seconds()
            left = self.max_attempts - self.attempt
            when = f"waiting: {waiting}" if waiting else _in(wait)
            retry = (
                f"Yes: at {_at(self.due_at)} ({when}), attempt {self.attempt + 1} of "
                f"{self.max_attempts}; {left} attempt(s) left."
            )
        else:
            retry = f"It is due to run at {_at(self.due_at)}."
        return {
            "did it run": ran,
            "did it succeed": succeeded,
            "why did it fail": why,
            "will it retry": retry,
        }

    def _ended_without_failing(self) -> str:
        """Why a job ended unsuccessfully with no error: an operator's cancel (and where its
        compensation led), or an outcome its handler chose (a declined card)."""
        cancels = [e for e in self.history if e.trigger == T.CANCEL]
        if cancels:
            cancel = cancels[-1]
            by = (
                "an operator cancelled it"
                if (cancel.detail or {}).get("by")
                else "it was cancelled"
            )
            text = f"It did not fail: {by} in {cancel.from_state!r} at {_at(cancel.at)}"
            if cancel.to_state != self.state:
                text += f"; the cancel led to {cancel.to_state!r}, and it ended in {self.state!r}"
            return text + "."
        last = self.history[-1] if self.history else None
        if last is None:
            return "no reason recorded"
        return (
            f"It did not fail: it ended in {self.state!r} by {last.trigger!r} from "
            f"{last.from_state!r} at {_at(last.at)}."
        )


def _attempts(n: int) -> str:
    return f"{n} attempt" + ("" if n == 1 else "s")


def _kind_of(chart: Chart | None, state: str) -> StateKind | None:
    if chart is None:
        return None
    try:
        return chart.state(state).kind
    except ValueError:
        return None


def _reason(reason: str | None) -> str:
    return {
        "permanent": "the handler raised a permanent error",
        "exhausted": "it failed on every allowed attempt",
        "invalid_payload": "its stored payload no longer validates",
        "not_json": "a step or the handler returned a value that is not JSON",
        "deadline": "its state's deadline passed",
        "undeclared_outcome": "the handler returned an outcome its state does not have",
        "unknown_state": "its state is not one of its chart's",
        "corrupt_row": "its row no longer reads back",
        "attempts_exceeded": "it made more attempts than its budget",
        "migrated": "a chart migration holds it for an operator",
        None: "no reason recorded",
    }.get(reason, reason or "")


def _at(when: datetime | None) -> str:
    return when.isoformat(timespec="seconds") if when else "(unknown)"


def _in(seconds: float) -> str:
    if seconds <= 0:
        return "due now"
    return f"in {seconds:.1f}s"


def job_view(store: Store, job_id: int) -> JobView:
    """The job's state, attempts, timing, last error and full history (JobNotFound if none)."""
    row = store.job_get(job_id)
    if row is None:
        raise JobNotFound(f"no job with id {job_id}")
    return view_of(row, store.job_events(job_id))


def view_of(row: JobRow, events: list[EventRecord]) -> JobView:
    error = None
    if row.last_error_class is not None:
        error = ErrorInfo(
            row.last_error_class, row.last_error_message or "", row.last_error_traceback or ""
        )
    return JobView(
        id=row.id,
        kind=row.kind,
        chart=row.chart,
        state=row.state,
        payload=row.payload,
        result=row.result,
        idempotency_key=row.idempotency_key,
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        priority=row.priority,
        queue=row.queue,
        due_at=row.due_at,
        lease_expires_at=row.lease_expires_at,
        started_at=row.started_at,
        correlation_id=row.correlation_id,
        last_error=error,
        quarantine_reason=row.quarantine_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        history=tuple(
            EventView(e.trigger, e.from_state, e.to_state, e.attempt, e.at, e.worker, e.detail)
            for e in events
        ),
        deadline=row.deadline,
        cancel_requested_at=row.cancel_requested_at,
        chart_version=row.chart_version,
        cancel_requested_by=row.cancel_requested_by if row.cancel_requested_at else None,
    )


def stray_note(rt: Runtime, job_id: int) -> str | None:
    """Why the running chart cannot take the job as it is, and what a worker will do about
    it (engine.strays); None for a job it can take, or one no app here registers."""
    row = rt.store.job_get(job_id)
    if row is None or row.finished_at is not None:
        return None
    spec = rt.registry.find(row.kind)
    if spec is None or (row.lease_expires_at is not None and row.state in spec.state_names):
        return None  # not ours to judge, or held by a worker
    verdict = judge(rt.moves, spec, row, rt.now())
    if verdict is None:
        return None
    doing = {
        "migrate": "a worker migrates it",
        "set_aside": "a worker quarantines it",
        "stranded": "stranded, left as it is and reported",
    }[verdict.action]
    return f"{doing} ({verdict.why})"


def waiting_reason(rt: Runtime, view: JobView) -> str | None:
    """Why a due, unclaimed job waits, when a global limit holds it back (else None):
    "kind 'send' is at its limit of 5 running", or its rate with the next free start."""
    if view.due_at is None or view.lease_expires_at is not None:
        return None
    now = rt.now()
    if view.due_at > now:
        return None
    limits = rt.registry.limits.of(view.kind, view.queue)
    if not limits:
        return None
    by_key = {scope.key: (scope, limit) for scope, limit in limits.items()}
    wanted = [x for x in rt.registry.limits.for_store() if x.key in by_key]
    used = rt.store.limit_usage(wanted, now)
    for limit in wanted:
        scope, declared = by_key[limit.key]
        usage = used[limit.key]
        if limit.concurrency is not None and usage.running >= limit.concurrency:
            return f"{scope} is at its limit of {limit.concurrency} running"
        rate = declared.rate
        if rate is not None and len(usage.busy) >= rate.starts:
            frees = f", next start at {_at(usage.free_at)}" if usage.free_at else ""
            return f"{scope} is at its rate of {rate}{frees}"
    return None


def live_overlay(
    store: Store, chart: str, now: datetime, window: timedelta, *, kind: str | None = None
) -> Overlay:
    """Jobs per state of ``chart`` (only ``kind``'s jobs when given), each state's oldest,
    and transitions per edge since ``now - window``: what ``render --live`` draws."""
    figures = store.chart_state_figures(chart, kind=kind)
    return Overlay(
        jobs={state: count for state, (count, _) in figures.items()},
        oldest={state: now - oldest for state, (_, oldest) in figures.items()},
        taken=store.chart_edge_counts(chart, now - window, kind=kind),
        window=window,
        caption=f"kind {kind}, live: transitions in the last {seconds_text(window)}"
        if kind
        else None,
    )


def path_chart(store: Store, row: JobRow) -> tuple[Chart, Overlay]:
    """The chart version ``row`` last moved under, as recorded in the database, and the
    job's path on it (its state, and each transition taken with how often). Raises
    ``JobNotFound`` when that version is not recorded (the job ran before versions were
    kept)."""
    from statecharts.versions import chart_from_markup

    recorded = store.chart_versions_of(row.chart).get(row.chart_version or "")
    if recorded is None:
        raise JobNotFound(
            f"job {row.id}'s chart version ({row.chart_version or 'unrecorded'}) is not "
            "recorded in this database (it ran before versions were kept)"
        )
    taken = {
        (trigger, source, dest): n
        for (trigger, source, dest), n in store.job_event_counts(row.id).items()
        if source is not None
    }
    caption = f"job {row.id}, version {recorded.version}" + (
        f" {recorded.label}" if recorded.label else ""
    )
    overlay = Overlay(jobs={row.state: 1}, taken=dict(taken), caption=caption)
    return chart_from_markup(recorded.markup, recorded.label or ""), overlay


@dataclass(frozen=True)
class ScheduleRow:
    """One schedule as operators see it."""

    name: str
    kind: str
    spec: str
    policy: str
    last_slot: datetime | None
    last_job_id: int | None
    last_job_state: str | None
    next_fire: datetime | None


def schedule_rows(engine: Engine, *, stored: bool = True) -> list[ScheduleRow]:
    """Each cron schedule and poller of ``engine`` with its last slot, its last job and its
    next fire (``jobcharts schedules``, the dashboard); ``stored``: False when there is no
    database to read yet (nothing fired)."""
    from engine.store.schedules import ScheduleStore

    kept_rows: dict[str, ScheduleListing] = {}
    if stored:
        with contextlib.suppress(NoSchema):  # no worker has run here yet
            kept_rows = ScheduleStore(engine.store).listing()
    now = engine.now()
    rows = []
    for schedule in engine.schedules:
        kept = kept_rows.get(schedule.name)
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
