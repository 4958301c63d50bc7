"""Figures over all the jobs of a database, now and over a recent window (``jobcharts
stats``): counts per kind and state, throughput, failure rate, lag from due to start, the
oldest due job and the quarantine reasons. Kinds come from the data, so no app is needed.

Definitions (the window is (now - window, now]):

- **counts**: every job row per (kind, state); ``final`` when the job is finished
  (``finished_at`` set: succeeded, quarantined, cancelled or a flow's own final state).
- **throughput**: jobs whose ``finished_at`` falls in the window, per kind and final state,
  and that number divided by the window's seconds. A job requeued since counts no more
  (it is not finished); a job requeued and finished again in the window counts once.
- **failure rate**: failed attempts / ended attempts, counted from the history events in
  the window. An *ended attempt* is an event of any trigger except those that start an
  attempt or end none: ``enqueue``, ``start``, ``release`` (a claim whose handler never
  started: its attempt is undone), ``requeue``, ``cancel``, the timers ``deadline`` and
  ``elapsed``, ``migrate`` and ``set_aside``. So it is ``succeed``, ``fail``,
  ``fail_permanent``, ``expire``, a poller's ``wait``, or a flow's own outcome. A *failed*
  one is an ended attempt whose event detail records an ``error`` (``fail``,
  ``fail_permanent``, ``expire``, a poller's ``wait`` past its deadline). None when the
  window has no ended attempt.
- **lag**: for each ``start`` event in the window (the latest ``sample`` of them), its
  time minus the time the job was due. The due time is not stored once a job is claimed;
  it is taken from the job's previous event: its time plus its ``retry_in`` (a retry's
  backoff), or its ``next_check`` (a poller's next check), else its time (an enqueue, a
  release, a requeue, a step entered). Exact for immediate enqueues, scheduled slots,
  retries, later polls and releases. Overstated by the wait when the wait is not recorded:
  a job enqueued with a delay (or ``run_at``), a flow step entered with a timer (a poll's
  first check, ``every`` after entering), a migration that kept the due time. p50 and p99
  are nearest-rank percentiles (the smallest lag with at least that share of the sample
  at or below it).
- **oldest due job**: the unfinished job with the smallest ``due_at`` <= now (jobs only
  have a ``due_at`` while they wait to be claimed), with its age (now - due_at).
- **quarantine reasons**: quarantined jobs per kind and ``quarantine_reason``.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from engine.moves import CREATED, MIGRATE, SET_ASIDE
from engine.store import Store
from engine.store.rows import CorruptTime
from engine.store.schema import as_utc
from engine.store.stats import StartRow, StatsRows, stats_read
from statecharts import S, T

if TYPE_CHECKING:
    from engine.engine import Engine

LAG_SAMPLE = 10_000
"""How many starts (the latest in the window) the lag percentiles are computed over."""

NOT_ATTEMPTS = frozenset(
    {
        CREATED,
        str(T.START),
        str(T.RELEASE),
        str(T.REQUEUE),
        str(T.CANCEL),
        str(T.DEADLINE),
        str(T.ELAPSED),
        str(MIGRATE),
        SET_ASIDE,
    }
)
"""Triggers whose events end no attempt (see the failure rate above)."""


@dataclass(frozen=True)
class StateCount:
    """Jobs of one kind in one state now."""

    kind: str
    state: str
    final: bool
    jobs: int


@dataclass(frozen=True)
class Window:
    """What happened in the window, for one kind (``kind`` None: all kinds together)."""

    kind: str | None
    finished: int
    finished_by_state: dict[str, int]
    per_second: float
    attempts: int
    failed: int
    failure_rate: float | None
    lag_starts: int  # starts in the lag sample
    lag_p50: float | None  # seconds
    lag_p99: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "finished": self.finished,
            "finished_by_state": dict(sorted(self.finished_by_state.items())),
            "per_second": self.per_second,
            "attempts": self.attempts,
            "failed": self.failed,
            "failure_rate": self.failure_rate,
            "lag": {"starts": self.lag_starts, "p50": self.lag_p50, "p99": self.lag_p99},
        }


@dataclass(frozen=True)
class OldestDue:
    """The unfinished job due the longest."""

    id: int
    kind: str
    state: str
    due_at: datetime
    age: float  # seconds since due_at

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "due_at": self.due_at.isoformat(),
            "age_seconds": self.age,
        }


@dataclass(frozen=True)
class ReasonCount:
    """Quarantined jobs of one kind with one reason."""

    kind: str
    reason: str | None
    jobs: int


@dataclass(frozen=True)
class Stats:
    """The figures of one database at ``now`` over the last ``window`` seconds."""

    now: datetime
    window: float  # seconds
    counts: tuple[StateCount, ...]
    total: Window
    kinds: tuple[Window, ...] = field(default=())
    oldest_due: OldestDue | None = None
    quarantine_reasons: tuple[ReasonCount, ...] = ()
    lag_sample_limit: int = LAG_SAMPLE
    lag_sample_full: bool = False  # the window held more starts than the sample took

    @property
    def unfinished(self) -> int:
        return sum(c.jobs for c in self.counts if not c.final)

    @property
    def finished(self) -> int:
        return sum(c.jobs for c in self.counts if c.final)

    def to_json(self) -> dict[str, Any]:
        """The same figures as plain JSON types (times as ISO 8601 text, seconds as floats)."""
        return {
            "now": self.now.isoformat(),
            "window_seconds": self.window,
            "jobs": {
                "unfinished": self.unfinished,
                "finished": self.finished,
                "by_kind_state": [
                    {"kind": c.kind, "state": c.state, "final": c.final, "jobs": c.jobs}
                    for c in self.counts
                ],
            },
            "window": {
                **self.total.to_json(),
                "lag_sample": {"limit": self.lag_sample_limit, "full": self.lag_sample_full},
                "kinds": {w.kind: w.to_json() for w in self.kinds},
            },
            "oldest_due": None if self.oldest_due is None else self.oldest_due.to_json(),
            "quarantine_reasons": [
                {"kind": r.kind, "reason": r.reason, "jobs": r.jobs}
                for r in self.quarantine_reasons
            ],
        }


def stats(
    source: Engine | Store,
    now: datetime | None = None,
    window: float | timedelta = 3600.0,
    *,
    sample: int = LAG_SAMPLE,
) -> Stats:
    """The figures of ``source``'s database at ``now`` over the last ``window``.

    ``source``: an Engine (``now`` defaults to its time source) or a Store (``now``
    defaults to the database's clock). ``sample``: the latest starts the lag is computed
    over. Read-only; see the module's docstring for what each figure means.
    """
    seconds = window.total_seconds() if isinstance(window, timedelta) else float(window)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"the window must be a positive number of seconds, got {window!r}")
    if sample < 1:
        raise ValueError(f"the lag sample must hold at least one start, got {sample}")
    if isinstance(source, Store):
        store = source
        now = store.db_now() if now is None else now
    else:
        store = source.store
        now = source.now() if now is None else now
    rows = stats_read(
        store,
        now=now,
        since=now - timedelta(seconds=seconds),
        start_trigger=str(T.START),
        quarantined=str(S.QUARANTINED),
        sample=sample,
    )
    return figures(rows, now, seconds, sample)


def figures(rows: StatsRows, now: datetime, window: float, sample: int) -> Stats:
    """The Stats the store's rows come to (pure: no database)."""
    finished: dict[str, Counter[str]] = defaultdict(Counter)
    for f in rows.finished:
        finished[f.kind][f.state] += f.jobs
    attempts: Counter[str] = Counter()
    failed: Counter[str] = Counter()
    for e in rows.events:
        if e.trigger in NOT_ATTEMPTS:
            continue
        attempts[e.kind] += e.events
        if e.error:
            failed[e.kind] += e.events
    lags: dict[str, list[float]] = defaultdict(list)
    for start in rows.starts:
        lag = lag_of(start)
        if lag is not None:
            lags[start.kind].append(lag)
    kinds = sorted(set(finished) | set(attempts) | set(lags))
    per_kind = tuple(
        _window(k, finished[k], attempts[k], failed[k], lags[k], window) for k in kinds
    )
    total = _window(
        None,
        sum(finished.values(), Counter()),
        sum(attempts.values()),
        sum(failed.values()),
        [lag for k in kinds for lag in lags[k]],
        window,
    )
    oldest = None
    if rows.oldest_due is not None:
        due = rows.oldest_due
        age = (now - due.due_at).total_seconds()
        oldest = OldestDue(due.id, due.kind, due.state, due.due_at, age)
    return Stats(
        now=now,
        window=window,
        counts=tuple(StateCount(c.kind, c.state, c.final, c.jobs) for c in rows.counts),
        total=total,
        kinds=per_kind,
        oldest_due=oldest,
        quarantine_reasons=tuple(ReasonCount(r.kind, r.reason, r.jobs) for r in rows.reasons),
        lag_sample_limit=sample,
        lag_sample_full=len(rows.starts) >= sample,
    )


def lag_of(start: StartRow) -> float | None:
    """Seconds from the job's due time to this start (see the module docstring), never
    negative; None when no earlier event of the job is left to tell the due time."""
    if start.previous_at is None or any(
        isinstance(t, CorruptTime) for t in (start.at, start.previous_at)
    ):
        return None
    due = start.previous_at
    detail = start.previous_detail if isinstance(start.previous_detail, dict) else {}
    retry_in = detail.get("retry_in")
    next_check = detail.get("next_check")
    if isinstance(retry_in, int | float) and math.isfinite(retry_in):
        due += timedelta(seconds=retry_in)
    elif isinstance(next_check, str):
        with contextlib.suppress(ValueError):  # unreadable: the event's own time
            due = as_utc(datetime.fromisoformat(next_check))
    return max((start.at - due).total_seconds(), 0.0)


def percentile(ordered: list[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of ``ordered`` (sorted ascending), or None."""
    if not ordered:
        return None
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _window(
    kind: str | None,
    finished: Counter[str],
    attempts: int,
    failed: int,
    lags: list[float],
    window: float,
) -> Window:
    done = sum(finished.values())
    ordered = sorted(lags)
    return Window(
        kind=kind,
        finished=done,
        finished_by_state=dict(finished),
        per_second=done / window,
        attempts=attempts,
        failed=failed,
        failure_rate=failed / attempts if attempts else None,
        lag_starts=len(ordered),
        lag_p50=percentile(ordered, 50),
        lag_p99=percentile(ordered, 99),
    )
