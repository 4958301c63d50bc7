"""``Engine``: register job kinds, enqueue, tick, inspect, requeue.

One tick: claim due jobs in one transaction -> run their handlers -> commit every outcome's
transition (compare-and-set plus event row) in one transaction.
"""

from __future__ import annotations

import functools
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar, overload

import structlog
from pydantic import BaseModel

from engine.clock import Clock, SystemClock
from engine.effects import Failure, Written, write_transition
from engine.errors import DatabaseBound, JobNotFound, TransitionNotAllowed
from engine.registry import (
    DEFAULT_KEY_TTL,
    Invariant,
    JobSpec,
    KeyFunction,
    Registry,
    StepHandler,
)
from engine.retry import RetryPolicy
from engine.runner import Claimed, Outcome, log_finished, run_attempt
from engine.schedules import ScheduleRegistry
from engine.scheduling import Scheduling
from engine.store import EventRecord, EventRow, JobRow, Move, NewJob, Store, resolve_url
from engine.store.store import AppConnection
from engine.view import ErrorInfo, EventView, JobView
from statecharts import (
    TIMER_TRIGGERS,
    Chart,
    ChartError,
    CompiledChart,
    Effect,
    Facts,
    S,
    T,
    Transition,
    compile_chart,
    lifecycle,
)
from statecharts.render import Overlay

F = TypeVar("F", bound=Callable[..., Any])

logger = structlog.get_logger("jobcharts")

CREATED = "enqueue"  # the trigger recorded for a job's creation event


LEASE_EXPIRED = "LeaseExpired"  # the error class recorded when a lease runs out
DEADLINE_PASSED = "DeadlinePassed"  # ... and when a polling state's deadline passes
SHUTDOWN = "WorkerShutdown"  # ... and when a stopping worker gives up a running handler
UNSTORABLE = "UnstorableOutcome"  # ... and when an outcome cannot be turned into a transition


@dataclass
class TickReport:
    """What one tick (or a run of them) did.

    ``released``: claims whose handler never started, handed back without counting an
    attempt. ``expired``: attempts whose lease ran out or were handed back while running
    (also counted in retried or quarantined). ``fenced``: results discarded because their
    attempt had lost its lease (timed out, rescued elsewhere, or handed back).
    ``advanced``: a flow moved on to another state (next step, or "check again later").
    ``ended``: reached a final state that is not success (a flow's own, e.g. refunded).
    ``timed``: transitions the tick fired without a handler (deadlines, delays, cancels).
    """

    claimed: int = 0
    succeeded: int = 0
    retried: int = 0
    quarantined: int = 0
    fenced: int = 0
    released: int = 0
    expired: int = 0
    advanced: int = 0
    cancelled: int = 0
    ended: int = 0
    timed: int = 0

    def add(self, other: TickReport) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def busy(self) -> bool:
        """Whether the tick moved any job (run_until_idle stops at the first idle tick)."""
        return bool(self.claimed or self.released or self.expired or self.timed)


@dataclass
class Batch:
    """Jobs claimed together under one lease token."""

    token: str
    jobs: list[Claimed]
    timed: int = 0  # jobs moved by a timer (deadline, delay) or a cancel instead of claimed


class Engine(Scheduling):  # cron(), poller(), schedule(), fire_schedules(): engine.scheduling
    """A job engine bound to one database (SQLite file by default, or PostgreSQL)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        clock: Clock | None = None,
        batch_size: int = 200,
        seed: int | None = None,
        worker_id: str | None = None,
        lease_seconds: float = 30.0,
        start_wave: int = 64,
        busy_timeout: float = 30.0,
        time_source: str | None = None,
        pool_size: int = 5,
        max_overflow: int = 10,
    ) -> None:
        """Bind to ``url`` (opened on first use).

        ``time_source``: ``"database"`` takes every time that leases, claims and due dates
        depend on from the database server's clock, so workers with skewed clocks cannot
        steal or keep leases; ``"local"`` uses ``clock``. The default is the database on
        PostgreSQL unless a ``clock`` is given (tests drive time), and local on SQLite
        (one machine, one clock).
        """
        if time_source not in (None, "database", "local"):
            raise ValueError(f"time_source is 'database' or 'local', got {time_source!r}")
        self._time_source = time_source
        self._pool = (pool_size, max_overflow)
        self._clock_given = clock is not None
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds}")
        self._url = url
        self.lease_seconds = lease_seconds
        self.start_wave = start_wave
        self.busy_timeout = busy_timeout
        self.clock: Clock = clock or SystemClock()
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.registry = Registry()
        self._unrescuable: set[int] = set()  # expired leases no transition can rescue
        self.schedules = ScheduleRegistry()
        self._store: Store | None = None

    # -- set-up --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return resolve_url(self._url)

    @property
    def store(self) -> Store:
        """The database, opened (and its schema created) on first use."""
        if self._store is None:
            self._store = Store(
                self._url,
                busy_timeout=self.busy_timeout,
                pool_size=self._pool[0],
                max_overflow=self._pool[1],
            )
        return self._store

    def now(self) -> datetime:
        """The current time by this engine's time source (see ``time_source``)."""
        if self._uses_db_time:
            return self.store.db_now()
        return self.clock.now()

    def _lease_base(self, now: datetime, tx_time: datetime | None) -> datetime:
        """When a lease taken now starts: the database's time inside the claim (database
        time), the clock read after the lock was granted (local time), or the caller's
        ``now`` when a clock was injected (tests drive time)."""
        if self._uses_db_time:
            return tx_time or self.now()
        return now if self._clock_given else self.clock.now()

    @property
    def _uses_db_time(self) -> bool:
        if self.store.dialect != "postgresql":
            return False  # SQLite: one machine, one clock; its time is the local time
        if self._time_source is not None:
            return self._time_source == "database"
        return not self._clock_given

    def bind(self, url: str) -> None:
        """Point the engine at another database before it is first used (CLI ``--db``)."""
        if self._store is not None and self._store.url != url:
            raise DatabaseBound(f"the engine already opened {self._store.url}")
        self._url = url

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    @overload
    def job(self, fn: F) -> F: ...

    @overload
    def job(
        self,
        fn: None = None,
        *,
        payload: type[BaseModel] | None = None,
        idempotency: KeyFunction | Invariant | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        kind: str | None = None,
        queue: str = "default",
        priority: int = 0,
        chart: Chart | None = None,
        idempotency_ttl: float | timedelta = DEFAULT_KEY_TTL,
    ) -> Callable[[F], F]: ...

    def job(
        self,
        fn: F | None = None,
        *,
        payload: type[BaseModel] | None = None,
        idempotency: KeyFunction | Invariant | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        kind: str | None = None,
        queue: str = "default",
        priority: int = 0,
        chart: Chart | None = None,
        idempotency_ttl: float | timedelta = DEFAULT_KEY_TTL,
    ) -> Any:
        """Register a handler ``fn(ctx, payload)`` as a job kind (its name unless ``kind=``)."""

        def register(handler: F) -> F:
            self.registry.add(
                handler,
                kind=kind,
                payload=payload,
                idempotency=idempotency,
                retry=retry,
                timeout=timeout,
                queue=queue,
                priority=priority,
                chart=chart,
                key_ttl=idempotency_ttl,
            )
            return handler

        return register(fn) if fn is not None else register

    def flow(
        self,
        kind: str,
        chart: Chart,
        handlers: Mapping[str, Callable[..., Any] | StepHandler],
        *,
        payload: type[BaseModel] | None = None,
        idempotency: KeyFunction | Invariant | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        queue: str = "default",
        priority: int = 0,
        idempotency_ttl: float | timedelta = DEFAULT_KEY_TTL,
    ) -> JobSpec:
        """Register a multi-step job: ``chart`` (see ``statecharts.flow``) and one handler
        per state it runs work in, ``{state: fn}`` or ``{state: StepHandler(fn, retry=...,
        timeout=...)}``. ``retry`` and ``timeout`` are the defaults of every step.

        A handler ``fn(ctx, payload)`` returns the outcome to take (a trigger name or an
        Enum member; None when its state has one outcome, or "not yet" in a polling
        state). A chart and its handlers that do not match are refused here.
        """
        return self.registry.add(
            _flow_entry(kind),
            kind=kind,
            payload=payload,
            idempotency=idempotency,
            retry=retry,
            timeout=timeout,
            queue=queue,
            priority=priority,
            chart=chart,
            key_ttl=idempotency_ttl,
            handlers=handlers,
        )

    # -- enqueue -------------------------------------------------------------------------

    def enqueue(
        self,
        kind: str,
        payload: BaseModel | dict[str, Any] | None = None,
        *,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        correlation_id: str | None = None,
        connection: AppConnection | None = None,
    ) -> int:
        """Store a job durably and return its id; a duplicate key returns the first job's id.

        Raises UnknownJobKind for an unregistered kind and pydantic's ValidationError for an
        invalid payload; in both cases nothing is stored.
        """
        return self.enqueue_many(
            kind,
            [payload],
            delay=delay,
            run_at=run_at,
            priority=priority,
            queue=queue,
            correlation_id=correlation_id,
            connection=connection,
        )[0]

    def enqueue_many(
        self,
        kind: str,
        payloads: Sequence[BaseModel | dict[str, Any] | None],
        *,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        correlation_id: str | None = None,
        connection: AppConnection | None = None,
    ) -> list[int]:
        """Enqueue many jobs of one kind in one transaction: all are stored or none.

        Every payload is validated before anything is written. With ``connection`` (a
        SQLAlchemy Connection or Session on the same database, inside the caller's open
        transaction) the jobs are written in that transaction: they exist if and only if
        the caller commits.
        """
        spec = self.registry.get(kind)
        models = [_validate(spec, payload) for payload in payloads]
        keys = [spec.key_for(model) for model in models]
        now = self.now()
        due = _due_time(now, delay, run_at)
        initial = spec.chart.initial.name
        items = [
            (
                NewJob(
                    kind=kind,
                    chart=spec.chart.name,
                    state=initial,
                    payload=model.model_dump(mode="json"),
                    idempotency_key=key,
                    max_attempts=spec.first_max_attempts,
                    priority=spec.priority if priority is None else priority,
                    queue=queue or spec.queue,
                    due_at=due,
                    correlation_id=correlation_id or uuid.uuid4().hex,
                    created_at=now,
                    key_expires_at=now + spec.key_ttl if key is not None else None,
                ),
                EventRow(CREATED, None, initial, 0, now, self.worker_id),
            )
            for model, key in zip(models, keys, strict=True)
        ]
        store = self.store  # opens the database (and creates the schema) first
        results = store.job_insert_many(items, connection=connection)
        if len(items) == 1:
            (job, _), (job_id, inserted) = items[0], results[0]
            if inserted:
                logger.info(
                    "job.enqueued",
                    job_id=job_id,
                    kind=kind,
                    correlation_id=job.correlation_id,
                    idempotency_key=job.idempotency_key,
                )
            else:  # the existing job keeps its own correlation id
                logger.info(
                    "job.deduplicated",
                    job_id=job_id,
                    kind=kind,
                    idempotency_key=job.idempotency_key,
                )
        elif items:
            fresh = sum(1 for _, inserted in results if inserted)
            logger.info("jobs.enqueued", kind=kind, jobs=fresh, deduplicated=len(items) - fresh)
        return [job_id for job_id, _ in results]

    # -- the tick ------------------------------------------------------------------------

    def tick(
        self,
        now: datetime | None = None,
        *,
        limit: int | None = None,
        executor: Executor | None = None,
        queues: Sequence[str] | None = None,
    ) -> TickReport:
        """One pass: rescue expired leases, claim due jobs, run them, commit their transitions.

        Handlers run in waves: each wave is marked started (one statement) just before it
        runs, so a crash leaves the rest of the batch "claimed, never started".
        ``queues``: claim only jobs of these queues (None: all).
        """
        fixed = now
        report = self.rescue(fixed or self.now())
        self.fire_schedules(fixed)  # due cron/poller slots become jobs claimed below
        batch = self.claim(fixed or self.now(), limit or self.batch_size, queues=queues)
        report.timed += batch.timed
        if not batch.jobs:
            return report
        clock_now: Callable[[], datetime] = (lambda: fixed) if fixed else self.now
        store = self.store
        outcomes: list[Outcome] = []
        wave = max(self.start_wave, 1)
        for first in range(0, len(batch.jobs), wave):
            started = self.start(batch, batch.jobs[first : first + wave], clock_now())
            if executor is None:
                outcomes += [run_attempt(c, store, clock_now) for c in started]
            else:
                outcomes += executor.map(lambda c: run_attempt(c, store, clock_now), started)
        committed = self.commit(outcomes, fixed or self.now())
        committed.claimed = len(batch.jobs)
        committed.fenced += len(batch.jobs) - len(outcomes)
        report.add(committed)
        return report

    def claim(self, now: datetime, limit: int, *, queues: Sequence[str] | None = None) -> Batch:
        """Claim up to ``limit`` due jobs of the registered kinds under one new lease.

        A due job whose state has no ``start`` enabled takes its timer instead (a polling
        state's deadline, a wait state's delay), and a job an operator asked to cancel
        while it ran is cancelled: those moves happen here, without running a handler.
        """
        specs = self.registry.specs
        token = uuid.uuid4().hex
        if not specs or limit <= 0:
            return Batch(token, [])
        states = sorted({s for spec in specs for s in spec.claim_states})
        leased_at: list[datetime] = []

        def plan(row: JobRow, tx_time: datetime | None) -> Move | None:
            spec = self.registry.find(row.kind)
            if spec is None:
                return None
            facts = _facts(row, now)
            try:
                if row.cancel_requested_at is not None:
                    cancelled = self._timer_move(spec, row, T.CANCEL, facts, now)
                    if cancelled is not None:
                        return cancelled
                transition = spec.compiled.fire(row.state, T.START, facts)
                if transition is None:
                    for trigger in TIMER_TRIGGERS:
                        timed = self._timer_move(spec, row, trigger, facts, now)
                        if timed is not None:
                            return timed
                    return None
            except ChartError as error:  # a state its chart no longer has
                logger.error("job.unclaimable", job_id=row.id, kind=row.kind, error=str(error))
                return None
            if not leased_at:
                # Read inside the claim's transaction, after its lock was granted: a wait
                # for the lock must not eat into the lease.
                leased_at.append(self._lease_base(now, tx_time))
            written = self._write(
                spec,
                transition,
                row.state,
                now=leased_at[0],
                attempt=row.attempt,
                deadline=row.deadline,
                timeout=self.lease_seconds,
                lease_token=token,
            )
            event = EventRow(
                T.START, row.state, transition.dest, written.values["attempt"], now, self.worker_id
            )
            return Move(row.id, row.state, row.version, row.lease_token, written.values, event)

        moved = self.store.job_claim_due(
            now=now,
            limit=limit,
            kinds=self.registry.kinds,
            states=states,
            plan=plan,
            queues=queues,
        )
        pairs = [(row, move) for row, move in moved if move.event.trigger == T.START]
        for row, move in moved:
            if move.event.trigger != T.START:
                logger.info(
                    f"job.{move.event.trigger}",
                    job_id=row.id,
                    kind=row.kind,
                    from_state=row.state,
                    to_state=move.values["state"],
                )
        # One query for the whole batch: a first attempt after a requeue has steps too.
        steps = self.store.step_get_many([row.id for row, _ in pairs])
        return Batch(
            token,
            [
                Claimed(
                    job_id=row.id,
                    kind=row.kind,
                    state=move.values["state"],
                    version=row.version + 1,
                    lease_token=token,
                    attempt=move.values["attempt"],
                    max_attempts=row.max_attempts,
                    payload=row.payload,
                    correlation_id=row.correlation_id,
                    spec=self.registry.get(row.kind),
                    steps=steps.get(row.id, {}),
                    deadline=row.deadline,
                )
                for row, move in pairs
            ],
            timed=len(moved) - len(pairs),
        )

    def _timer_move(
        self, spec: JobSpec, row: JobRow, trigger: str, facts: Facts, now: datetime
    ) -> Move | None:
        """The move of a transition the tick fires itself (no handler, no lease), or None."""
        transition = spec.compiled.fire(row.state, trigger, facts)
        if transition is None:
            return None
        failure = None
        if trigger == T.DEADLINE:
            failure = self._deadline_failure(row.state, row.deadline)
        return self._row_move(spec, row, transition, now, failure=failure)

    def _row_move(
        self,
        spec: JobSpec,
        row: JobRow,
        transition: Transition,
        now: datetime,
        *,
        failure: Failure | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Move:
        """The compare-and-set taking ``transition`` from the job as ``row`` read it."""
        written = self._write(
            spec,
            transition,
            row.state,
            now=now,
            attempt=row.attempt,
            deadline=row.deadline,
            failure=failure,
        )
        event = EventRow(
            transition.trigger,
            row.state,
            transition.dest,
            row.attempt,
            now,
            self.worker_id,
            {**(written.detail or {}), **(detail or {})} or None,
        )
        return Move(row.id, row.state, row.version, row.lease_token, written.values, event)

    @staticmethod
    def _deadline_failure(state: str, deadline: datetime | None) -> Failure:
        when = deadline.isoformat() if deadline else "(unknown)"
        return Failure(
            DEADLINE_PASSED, f"state {state!r} reached its deadline {when}", reason="deadline"
        )

    def _write(
        self,
        spec: JobSpec,
        transition: Transition,
        source: str,
        *,
        now: datetime,
        attempt: int,
        deadline: datetime | None,
        **kw: Any,
    ) -> Written:
        """``write_transition`` with the retry policy, timers and budgets of ``spec``'s states."""
        entry = None
        if Effect.ENTER_STEP in transition.effects:
            entry = spec.entry(transition.dest)
        elif Effect.RESET_ATTEMPTS in transition.effects:
            entry = spec.entry(spec.first_step)
        written = write_transition(
            transition,
            now=now,
            attempt=attempt,
            retry=spec.retry_for(source),
            rng=self.rng,
            entry=entry,
            deadline=deadline,
            every=spec.chart.state(source).every,
            **kw,
        )
        if transition.trigger == T.CANCEL:
            written.values["cancel_requested_at"] = None  # the request is honoured
        return written

    def start(self, batch: Batch, jobs: list[Claimed], now: datetime) -> list[Claimed]:
        """Record that ``jobs``' handlers start now; return those still under the lease."""
        held = self.store.job_mark_started([c.job_id for c in jobs], batch.token, now)
        lost = [c for c in jobs if c.job_id not in held]
        if lost:  # asked to cancel since the claim: cancel now rather than run the handler
            rows = self.store.job_get_many(c.job_id for c in lost)
            asked = [
                move
                for c in lost
                if (row := rows.get(c.job_id)) is not None
                and row.cancel_requested_at is not None
                and (move := self._cancel_move(Outcome(c, T.CANCEL), now)) is not None
            ]
            done = {
                m.job_id
                for m, ok in zip(asked, self.store.job_transition_many(asked), strict=True)
                if ok
            }
            for claimed in lost:
                if claimed.job_id in done:
                    logger.info(
                        "job.cancel", job_id=claimed.job_id, kind=claimed.kind, before="start"
                    )
                else:
                    logger.warning(
                        "attempt.lease_lost_before_start", job_id=claimed.job_id, kind=claimed.kind
                    )
        return [c for c in jobs if c.job_id in held]

    def rescue(
        self, now: datetime, limit: int | None = None, exclude: Sequence[int] = ()
    ) -> TickReport:
        """Hand on jobs whose lease expired: never started -> released, else expired.

        A released job goes back to pending and its attempt is not counted (its handler
        never ran). An expired one may have run, so the attempt counts: retry_wait after
        the backoff, or quarantined when attempts are exhausted. ``exclude``: jobs the
        caller itself holds (a worker renews those rather than rescuing itself).
        """
        report = TickReport()

        def plan(row: JobRow, _tx_time: datetime | None) -> Move | None:
            spec = self.registry.find(row.kind)
            if spec is None:
                return None
            never_started = row.started_at is None
            trigger = T.RELEASE if never_started else T.EXPIRE
            facts = _facts(row, now)
            try:
                if row.cancel_requested_at is not None and spec.compiled.fire(
                    row.state, T.CANCEL, facts
                ):
                    trigger = T.CANCEL  # asked to stop while it ran: don't run it again
                transition = spec.compiled.fire(row.state, trigger, facts)
            except ChartError as error:  # a state its chart no longer has
                transition, problem = None, str(error)
            else:
                problem = f"chart {spec.chart.name!r} has no {trigger} from {row.state!r}"
            if transition is None:
                # Left for an operator, and skipped from now on: it must not take the place
                # of rescuable jobs in every later rescue's batch.
                self._unrescuable.add(row.id)
                logger.error("job.unrescuable", job_id=row.id, kind=row.kind, error=problem)
                return None
            failure = None
            if not never_started and trigger == T.EXPIRE:
                failure = Failure(
                    LEASE_EXPIRED,
                    f"attempt {row.attempt}'s lease expired at "
                    f"{_iso(row.lease_expires_at)} while its handler may have been running"
                    " (the worker crashed, was killed, hung, or lost the database)",
                )
            expired_at = {"lease_expired_at": _iso(row.lease_expires_at)}
            return self._row_move(spec, row, transition, now, failure=failure, detail=expired_at)

        for row, move in self.store.job_rescue_expired(
            now=now,
            limit=limit or self.batch_size,
            kinds=self.registry.kinds,
            plan=plan,
            exclude=[*exclude, *self._unrescuable],
        ):
            trigger = move.event.trigger
            logger.warning(
                "job.rescued",
                job_id=row.id,
                kind=row.kind,
                attempt=row.attempt,
                trigger=trigger,
                state=move.values["state"],
                lease_expired_at=_iso(row.lease_expires_at),
            )
            if trigger == T.RELEASE:
                report.released += 1
            elif trigger == T.CANCEL:
                report.cancelled += 1
            elif move.values.get("quarantine_reason"):
                report.expired += 1
                report.quarantined += 1
            else:
                report.expired += 1
                report.retried += 1
        return report

    def hand_back(self, jobs: Iterable[Claimed], *, started: bool, now: datetime) -> TickReport:
        """Give up held jobs at once (a worker shutting down); reports what moved.

        Jobs whose handler never started are released (attempt not counted); jobs still
        running past the grace period expire now (attempt counted, due at once). Their late
        results are fenced out by the lease.
        """
        report = TickReport()
        moves = []
        for claimed in jobs:
            trigger = T.EXPIRE if started else T.RELEASE
            facts = Facts(claimed.attempt, claimed.max_attempts, now=now, deadline=claimed.deadline)
            transition = claimed.spec.compiled.fire(claimed.state, trigger, facts)
            if transition is None:
                continue
            failure = (
                Failure(SHUTDOWN, "the worker shut down while the handler ran") if started else None
            )
            written = self._write(
                claimed.spec,
                transition,
                claimed.state,
                now=now,
                attempt=claimed.attempt,
                deadline=claimed.deadline,
                failure=failure,
                retry_now=True,
            )
            event = EventRow(
                trigger,
                claimed.state,
                transition.dest,
                claimed.attempt,
                now,
                self.worker_id,
                {**(written.detail or {}), "by": "shutdown"},
            )
            moves.append(
                Move(
                    claimed.job_id,
                    claimed.state,
                    claimed.version,
                    claimed.lease_token,
                    written.values,
                    event,
                )
            )
        for move, ok in zip(moves, self.store.job_transition_many(moves), strict=True):
            if not ok:
                continue
            if not started:
                report.released += 1
                continue
            report.expired += 1
            if move.values.get("quarantine_reason"):
                report.quarantined += 1
            else:
                report.retried += 1
        return report

    def renew(self, batch_token: str, job_ids: list[int], now: datetime) -> set[int]:
        """Heartbeat: extend the lease of running jobs; returns the ids still held."""
        expires = now + timedelta(seconds=self.lease_seconds)
        return self.store.lease_renew(job_ids, batch_token, expires)

    def commit(self, outcomes: Iterable[Outcome], now: datetime) -> TickReport:
        """Persist every outcome's transition in one transaction; fenced ones are dropped."""
        report = TickReport()
        moves: list[Move] = []
        for outcome in outcomes:
            if outcome.fenced:
                report.fenced += 1
                log_finished(outcome, committed=False, dest=None, next_due=None)
                continue
            try:
                moves.append(self._outcome_move(outcome, now))
            except Exception as error:  # no enabled edge, a due date out of range, ...
                logger.error(
                    "attempt.unstorable",
                    job_id=outcome.claimed.job_id,
                    kind=outcome.claimed.kind,
                    outcome=outcome.trigger,
                    error=repr(error),
                )
                failure = Failure(
                    UNSTORABLE, f"the attempt's outcome could not be stored: {error!r}"[:2000]
                )
                replacement = Outcome(outcome.claimed, T.FAIL_PERMANENT, failure=failure)
                try:
                    moves.append(self._outcome_move(replacement, now))
                except Exception:  # not even that: the lease expires and rescue counts it
                    logger.exception("attempt.uncommittable", job_id=outcome.claimed.job_id)
        applied = list(zip(moves, self.store.job_transition_many(moves), strict=True))
        cancelled = [m for m, ok in applied if not ok and m.unless_cancelled]
        if cancelled:  # an operator asked to cancel while these ran: cancel them instead
            applied = [(m, ok) for m, ok in applied if ok or not m.unless_cancelled]
            applied += self._cancel_instead(cancelled, now)
        entered = [m.job_id for m, ok in applied if ok and Effect.ENTER_STEP in m.tag[2]]
        if entered:
            report.cancelled += self._cancel_pending(entered, now)
        for move, ok in applied:
            done: Outcome = move.tag[0]
            dest = move.values["state"]
            log_finished(done, committed=ok, dest=dest if ok else None, next_due=move.tag[1])
            if not ok:
                report.fenced += 1
            else:
                _count(report, move, done.claimed.spec.chart)
        return report

    def _cancel_instead(self, moves: list[Move], now: datetime) -> list[tuple[Move, bool]]:
        """Replace outcomes refused because a cancel was requested by the cancel itself."""
        rows = self.store.job_get_many(m.job_id for m in moves)
        results: list[tuple[Move, bool]] = []
        replacements: list[Move] = []
        for move in moves:
            row = rows.get(move.job_id)
            held = (
                row is not None
                and row.cancel_requested_at is not None
                and (row.state, row.version, row.lease_token)
                == (move.from_state, move.version, move.lease_token)
            )
            if not held:
                results.append((move, False))  # fenced: the lease was lost
                continue
            outcome: Outcome = move.tag[0]
            cancel = Outcome(outcome.claimed, T.CANCEL, duration=outcome.duration)
            # No cancel from this state (a request cannot be made there; defensive): the
            # attempt's own outcome stands.
            replacements.append(
                self._cancel_move(cancel, now) or replace(move, unless_cancelled=False)
            )
        applied = self.store.job_transition_many(replacements)
        return results + list(zip(replacements, applied, strict=True))

    def _cancel_pending(self, job_ids: list[int], now: datetime) -> int:
        """Take a cancel requested while a step ran from the state the step led to (its
        ``on_cancel``: cancelled, or a compensation). Returns how many were cancelled."""
        moves = []
        for row in self.store.job_get_many(job_ids).values():
            spec = self.registry.find(row.kind)
            if row.cancel_requested_at is None or row.finished_at is not None or spec is None:
                continue
            move = self._timer_move(spec, row, T.CANCEL, _facts(row, now), now)
            if move is None:  # that state cannot be cancelled: the request is moot
                self.store.job_clear_cancel(row.id)
                continue
            moves.append(move)
        done = sum(self.store.job_transition_many(moves))
        if done:
            logger.info("jobs.cancelled_after_step", jobs=done)
        return done

    def _cancel_move(self, cancel: Outcome, now: datetime) -> Move | None:
        """The move cancelling a held job, or None when its chart has no cancel from there."""
        try:
            return replace(self._outcome_move(cancel, now), unless_cancelled=False)
        except ChartError:
            logger.error(
                "job.uncancellable", job_id=cancel.claimed.job_id, state=cancel.claimed.state
            )
            return None

    def _outcome_move(self, outcome: Outcome, now: datetime) -> Move:
        claimed = outcome.claimed
        spec = claimed.spec
        failure = outcome.failure
        facts = Facts(
            claimed.attempt,
            claimed.max_attempts,
            now=now,
            deadline=claimed.deadline,
            error_class=failure.error_class if failure else None,
        )
        transition = spec.compiled.require(claimed.state, outcome.trigger, facts)
        if outcome.trigger == T.WAIT and transition.dest != claimed.state and failure is None:
            failure = self._deadline_failure(claimed.state, claimed.deadline)  # "not yet", late
        written = self._write(
            spec,
            transition,
            claimed.state,
            now=now,
            attempt=claimed.attempt,
            deadline=claimed.deadline,
            failure=failure,
            result=outcome.result,
        )
        event = EventRow(
            outcome.trigger,
            claimed.state,
            transition.dest,
            claimed.attempt,
            now,
            self.worker_id,
            written.detail,
        )
        return Move(
            claimed.job_id,
            claimed.state,
            claimed.version,
            claimed.lease_token,
            written.values,
            event,
            tag=(outcome, written.next_due_at, transition.effects),
            # A retry (or "check again later") gives way to a cancel requested meanwhile;
            # an outcome that leaves the step stands (its work happened), and a request
            # still pending is then taken from the state it leads to (commit()).
            unless_cancelled=any(e in transition.effects for e in _RETRYING),
        )

    def run_until_idle(
        self, now: datetime | None = None, *, max_ticks: int = 100_000
    ) -> TickReport:
        """Tick until nothing is due now (jobs waiting for a later due_at stay waiting)."""
        total = TickReport()
        for _ in range(max_ticks):
            report = self.tick(now)
            total.add(report)
            if not report.busy:
                return total
        raise RuntimeError(f"run_until_idle: still busy after {max_ticks} ticks")

    def drain(self, *, timeout: float = 60.0, poll: float = 0.05) -> TickReport:
        """Tick, sleeping until the next due time, until every job of ours is final.

        Uses the real clock's passage of time: for scripts and the demo, not frozen-clock tests.
        """
        total = TickReport()
        deadline = time.monotonic() + timeout
        while True:
            total.add(self.run_until_idle())
            if self.store.job_count_unfinished(self.registry.kinds) == 0:
                return total
            if time.monotonic() > deadline:
                raise TimeoutError(f"drain: jobs still unfinished after {timeout}s")
            time.sleep(self.sleep_for(poll))

    def sleep_for(self, ceiling: float) -> float:
        """Seconds until the next due job, at most ``ceiling`` (what an idle worker sleeps)."""
        nxt = self.schedules.sooner(self.store.job_next_due(self.registry.kinds))
        if nxt is None:
            return ceiling
        return min(max((nxt - self.now()).total_seconds(), 0.0), ceiling)

    # -- operators -----------------------------------------------------------------------

    def prune(
        self, older_than: float | timedelta, *, include_quarantined: bool = False
    ) -> tuple[int, int]:
        """Delete final jobs (with their events and steps) finished more than ``older_than`` ago.

        Quarantined jobs wait for an operator, so they stay unless ``include_quarantined``.
        Dedupe keys outlive their jobs until their TTL: pruning never reopens a key early.
        Returns (jobs deleted, expired keys deleted).
        """
        age = older_than if isinstance(older_than, timedelta) else timedelta(seconds=older_than)
        now = self.now()
        states = {
            state.name
            for chart in [*self.registry.charts, lifecycle()]
            for state in chart.states
            if state.is_final and (include_quarantined or state.name != S.QUARANTINED)
        }
        jobs_deleted = keys_deleted = 0
        while True:
            pruned, keys = self.store.job_prune(
                finished_before=now - age, states=sorted(states), now=now
            )
            jobs_deleted += pruned
            keys_deleted += keys
            if pruned == 0:
                break
        logger.info("jobs.pruned", jobs=jobs_deleted, keys=keys_deleted, older_than=str(age))
        return jobs_deleted, keys_deleted

    def key_holder(self, kind: str, key: str) -> int | None:
        """The id of the job holding dedupe key (kind, key), even after it was pruned."""
        row = self.store.key_get(kind, key)
        return int(row.job_id) if row is not None else None

    def get(self, job_id: int) -> JobView:
        """The job's state, attempts, timing, last error and full history."""
        row = self.store.job_get(job_id)
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        events = self.store.job_events(job_id)
        return _view(row, events)

    def requeue(self, job_id: int) -> None:
        """Operator action: a quarantined (or cancelled) job gets a fresh run from pending."""
        self._operator(job_id, T.REQUEUE)

    def cancel(self, job_id: int) -> str:
        """Cancel a job that has not finished; returns the state it moved to ("cancelled",
        or a compensating step) or "requested".

        A job no handler holds takes its chart's cancel at once (to ``cancelled``, or to a
        compensating step a flow declares). A job a handler holds gets a cancel request: the
        handler sees ``ctx.cancelled``, ``ctx.step`` stops before its next step, and the job
        then takes the cancel instead of a retry or its next step (an outcome that ends the
        job stands: that work happened). A state the chart cannot be cancelled from refuses.
        """
        for _ in range(5):
            row = self.store.job_get(job_id)
            if row is None:
                raise JobNotFound(f"no job with id {job_id}")
            if row.lease_token is None or row.finished_at is not None:
                try:
                    return self._operator(job_id, T.CANCEL, row)
                except _Changed:
                    continue  # claimed meanwhile: look again
            spec = self.registry.find(row.kind)
            compiled = spec.compiled if spec else _compiled_lifecycle()
            if compiled.fire(row.state, T.CANCEL, _facts(row, self.now())) is None:
                raise TransitionNotAllowed(
                    f"cannot cancel job {job_id}: a handler is running it in {row.state!r}, "
                    f"and chart {row.chart!r} has no cancel from there"
                )
            if self.store.job_request_cancel(row, self.now()):
                logger.info("job.cancel_requested", job_id=job_id, kind=row.kind, state=row.state)
                return "requested"
        raise TransitionNotAllowed(f"job {job_id} keeps changing; try cancel again")

    def overlay(self, chart: str, window: float | timedelta = 3600.0) -> Overlay:
        """Live figures for ``render --live``: jobs per state of ``chart`` and the age of
        each state's oldest (since its last change), transitions per edge in ``window``."""
        span = window if isinstance(window, timedelta) else timedelta(seconds=window)
        now = self.now()
        figures = self.store.chart_state_figures(chart)
        return Overlay(
            jobs={state: count for state, (count, _) in figures.items()},
            oldest={state: now - oldest for state, (_, oldest) in figures.items()},
            taken=self.store.chart_edge_counts(chart, now - span),
            window=span,
        )

    def chart_of(self, name: str) -> Chart | None:
        """The chart named ``name``: a registered one, or the built-in lifecycle."""
        chart = self.registry.chart(name)
        if chart is None and name == "lifecycle":
            chart = lifecycle()
        return chart

    def _operator(self, job_id: int, trigger: str, row: JobRow | None = None) -> str:
        """Apply an operator's ``trigger`` to the job; returns the state it moved to."""
        row = row or self.store.job_get(job_id)
        if row is None:
            raise JobNotFound(f"no job with id {job_id}")
        chart = self.chart_of(row.chart)
        if chart is None:
            raise ChartError(f"job {job_id} uses chart {row.chart!r}, which this app does not know")
        spec = self.registry.find(row.kind)
        compiled = spec.compiled if spec else _compiled_lifecycle()
        now = self.now()
        facts = _facts(row, now)
        transition: Transition | None = compiled.fire(row.state, trigger, facts)
        if transition is None:
            allowed = sorted(
                {s for t in chart.transitions if t.trigger == trigger for s in t.sources}
            )
            raise TransitionNotAllowed(
                f"cannot {trigger} job {job_id}: it is {row.state!r}; {trigger} applies to "
                f"jobs in {allowed}"
            )
        if spec is not None:
            written = self._write(
                spec, transition, row.state, now=now, attempt=row.attempt, deadline=row.deadline
            )
        else:
            written = write_transition(
                transition, now=now, attempt=row.attempt, retry=RetryPolicy(), rng=self.rng
            )
        event = EventRow(
            trigger,
            row.state,
            transition.dest,
            row.attempt,
            now,
            self.worker_id,
            {"by": "operator"},
        )
        move = Move(row.id, row.state, row.version, row.lease_token, written.values, event)
        if trigger == T.REQUEUE:
            ttl = spec.key_ttl if spec else DEFAULT_KEY_TTL
            holder = self.store.job_requeue(move, row.kind, row.idempotency_key, now + ttl)
            if holder not in (0, job_id):
                raise TransitionNotAllowed(
                    f"cannot requeue job {job_id}: its idempotency key {row.idempotency_key!r} "
                    f"now belongs to job {holder}, and stays with it until the key's TTL has "
                    "passed and that job is final; that job does the work"
                )
            applied = holder == job_id
        else:
            applied = self.store.job_transition_many([move])[0]
        if not applied:
            raise _Changed(f"job {job_id} changed while applying {trigger}; try again")
        logger.info(
            f"job.{trigger}",
            job_id=job_id,
            kind=row.kind,
            from_state=row.state,
            to_state=transition.dest,
        )
        return transition.dest


_RETRYING = (Effect.SCHEDULE_RETRY, Effect.SCHEDULE_POLL)  # outcomes that stay for another go


class _Changed(TransitionNotAllowed):
    """The job changed between reading it and applying an operator's transition."""


def _flow_entry(kind: str) -> Callable[..., Any]:
    """A flow has no single handler; this stands in for it and says so if ever called."""

    def no_single_handler(*_args: Any) -> None:
        raise TypeError(f"job {kind!r} is a flow: its handlers run per state")

    return no_single_handler


@functools.cache
def _compiled_lifecycle() -> CompiledChart:
    """The built-in chart, compiled once: operators act on jobs of kinds no app registers."""
    return compile_chart(lifecycle())


def _iso(when: datetime | None) -> str:
    return when.isoformat() if when is not None else "(unknown)"


def _facts(row: JobRow, now: datetime) -> Facts:
    """What a job row tells its chart's guards at ``now``."""
    return Facts(row.attempt, row.max_attempts, now=now, due_at=row.due_at, deadline=row.deadline)


def _count(report: TickReport, move: Move, chart: Chart) -> None:
    """Count a committed outcome by where it led."""
    dest = chart.state(move.values["state"])
    trigger = move.event.trigger
    if trigger == T.CANCEL:
        report.cancelled += 1
    elif move.values.get("quarantine_reason"):
        report.quarantined += 1
    elif dest.is_final:
        if dest.success:
            report.succeeded += 1
        else:
            report.ended += 1
    elif trigger in (T.FAIL, T.EXPIRE):
        report.retried += 1
    else:
        report.advanced += 1


def _due_time(now: datetime, delay: float | timedelta | None, run_at: datetime | None) -> datetime:
    if run_at is not None:
        if run_at.tzinfo is None:
            raise ValueError("run_at must be timezone-aware")
        return run_at
    if delay is None:
        return now
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
    if seconds < 0:
        raise ValueError(f"delay must be >= 0, got {seconds}")
    return now + timedelta(seconds=seconds)


def _validate(spec: JobSpec, payload: BaseModel | dict[str, Any] | None) -> BaseModel:
    if isinstance(payload, spec.payload):
        return spec.payload.model_validate(payload.model_dump())
    if isinstance(payload, BaseModel):
        payload = payload.model_dump()
    return spec.payload.model_validate(payload if payload is not None else {})


def _view(row: JobRow, events: list[EventRecord]) -> JobView:
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
    )


__all__ = ["Engine", "Failure", "TickReport"]
