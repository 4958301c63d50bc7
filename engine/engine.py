"""``Engine``: a thin facade over the lifecycle verbs (config, clock, registration,
enqueue, operators, tick). Each verb lives in its own module; this class binds them to
one database, one registry and one instrumentation point."""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from datetime import datetime, timedelta
from typing import Any, TypeVar, Unpack, overload

from pydantic import BaseModel

from engine import claim as claiming
from engine import commit as committing
from engine import enqueue as enqueuing
from engine import operators
from engine.aclient import AsyncClient
from engine.clock import Clock, DatabaseClock, SystemClock
from engine.errors import DatabaseBound, RegistrationError
from engine.events import Telemetry
from engine.kinds import KindChange, check_enqueue, own_kinds
from engine.limits import Limit, Rate, Scope, make_limit
from engine.moves import Moves
from engine.outcomes import Claimed, Outcome
from engine.registration import Payload, attach_schedule, scheduled_kind, span
from engine.registry import (
    KIND_OPTIONS,
    JobOptions,
    JobSpec,
    KindOptions,
    Registry,
    StepHandler,
    check_options,
)
from engine.report import TickReport
from engine.services.prune import PruneConfig, Pruner
from engine.services.rescue import RescueConfig, Rescuer
from engine.services.retention import Retention, Rule
from engine.services.schedules import Scheduler
from engine.services.strays import StraySweeper, Sweep
from engine.store import Store, resolve_url
from engine.store.store import AppConnection
from engine.store.versions import ChartVersion
from engine.tick import claim_due, run_pass
from engine.timetable import (
    EPOCH,
    CronTrigger,
    IntervalTrigger,
    Misfire,
    Overlap,
    Policy,
    Schedule,
    ScheduleRegistry,
)
from engine.tracing import enable as enable_tracing
from engine.view import JobView, job_view, live_overlay
from statecharts import Chart, lifecycle
from statecharts.render import Overlay
from statecharts.versions import chart_markup

F = TypeVar("F", bound=Callable[..., Any])


class Engine:
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
        max_payload_bytes: int | None = 1_000_000,
        max_result_bytes: int | None = 1_000_000,
        tracing: bool = False,
    ) -> None:
        """Bind to ``url`` (opened on first use).

        ``max_payload_bytes`` and ``max_result_bytes``: the largest JSON a payload (refused
        at enqueue, nothing stored) or a result (a handler's or a step's: the attempt is
        quarantined ``too_large``) may be; None for no limit. Large data belongs in a blob
        store, the job holding its reference.

        ``tracing``: OpenTelemetry spans for enqueues and attempts (engine.tracing;
        ``jobcharts[otel]``), through the tracer provider the app configures.

        ``time_source``: ``"database"`` takes every time that leases, claims and due dates
        depend on from the database server's clock, so workers with skewed clocks cannot
        steal or keep leases (read from the server every few seconds and carried forward by
        the local monotonic clock in between); ``"local"`` uses ``clock``. The default is
        the database on PostgreSQL unless a ``clock`` is given (tests drive time), and
        local on SQLite (one machine, one clock).
        """
        if time_source not in (None, "database", "local"):
            raise ValueError(f"time_source is 'database' or 'local', got {time_source!r}")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds}")
        self._time_source = time_source
        self._pool = (pool_size, max_overflow)
        self._clock_given = clock is not None
        self._url = url
        self.lease_seconds = lease_seconds
        self.start_wave = start_wave
        self.busy_timeout = busy_timeout
        self.clock: Clock = clock or SystemClock()
        self.batch_size = batch_size
        self.rng = random.Random(seed)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.registry = Registry(max_payload_bytes, max_result_bytes)
        if tracing:
            enable_tracing()
        self.schedules = ScheduleRegistry()
        self.telemetry = Telemetry()
        self.moves = Moves(self)
        self._rescuer = Rescuer(self, RescueConfig())
        self._scheduler = Scheduler(self, self.schedules)
        self._strays = StraySweeper(self)
        self._async = AsyncClient(self)
        self.retention = Retention(self)  # workers prune finished jobs by it (retain())
        self._store: Store | None = None
        self._db_clock: DatabaseClock | None = None  # the server's time, read every few s
        self._recorded = 0  # registered kinds whose chart versions this store has
        self._enqueued_kinds: set[str] = set()  # kinds checked against their recorded owner
        # False: the database must already hold jobcharts' tables (read-only commands
        # never create them in a database the URL names by mistake).
        self.create_schema = True

    # -- set-up --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return resolve_url(self._url)

    @property
    def store(self) -> Store:
        """The database, opened (and its schema created) on first use."""
        if self._store is None:
            store = Store(
                self._url,
                busy_timeout=self.busy_timeout,
                pool_size=self._pool[0],
                max_overflow=self._pool[1],
                create=self.create_schema,
            )
            if not self.create_schema:
                try:
                    store.require_schema()
                except Exception:
                    store.close()
                    raise
            self._store = store
        return self._store

    def now(self) -> datetime:
        """The current time by this engine's time source (see ``time_source``)."""
        if self._uses_db_time:
            if self._db_clock is None:
                self._db_clock = DatabaseClock(self.store.db_now)
            return self._db_clock.now()
        return self.clock.now()

    def insert_time(self) -> datetime | None:
        """The time new jobs are stamped with: None on the database time source, so the
        insert reads the database's clock itself instead of costing a round trip first."""
        return None if self._uses_db_time else self.clock.now()

    def lease_base(self, now: datetime, tx_time: datetime | None) -> datetime:
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

    def open(self) -> None:
        """Open the database now rather than on first use (creating jobcharts' tables in a
        fresh one). An async app does it at startup, in a thread: on SQLite a transactional
        enqueue cannot create them while the app's transaction holds the write lock."""
        self.store  # noqa: B018 - the property opens it

    def bind(self, url: str) -> None:
        """Point the engine at another database before it is first used (CLI ``--db``)."""
        if self._store is not None and self._store.url != resolve_url(url):
            raise DatabaseBound(f"the engine already opened {self._store.url}")
        self._url = url

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self._db_clock = None
        self._recorded = 0
        self._enqueued_kinds.clear()

    def record_versions(self) -> None:
        """Record the version of every registered chart in the database, once each (so
        inspect, check and the diagrams can read the chart any job ran under)."""
        registered = len(self.registry)
        if registered == self._recorded:  # the enqueue path: one comparison
            return
        now = self.now()
        self.store.chart_versions_record(
            [
                ChartVersion(name, version, chart.label, chart_markup(chart), now)
                for name, (chart, version) in self.registry.versions.items()
            ]
        )
        self._recorded = registered

    def own_kinds(self, *, record: bool = True) -> list[KindChange]:
        """Record each registered kind's app and payload schema; refuse (KindConflict) one
        recorded otherwise with jobs in flight its new model would not take (engine.kinds).
        Workers call it at start."""
        changes = own_kinds(self.registry, self.store, self.now(), record=record)
        for change in changes:
            self.telemetry.warning(
                "kind.schema_changed",
                kind=change.kind,
                before=change.before.schema_hash,
                after=change.after.schema_hash,
                app=change.after.app,
                why=change.why,
            )
        return changes

    def sweep_strays(self, now: datetime | None = None, *, apply: bool = True) -> Sweep:
        """Judge the jobs a claim would not take as they are (a state a deploy removed, a
        corrupt row): migrate or set aside what can be, report what stays stranded
        (engine.strays). ``apply`` False: say what would happen, change nothing."""
        if apply:
            self.record_versions()
        return self._strays.run_once(self.now() if now is None else now, apply=apply)

    # -- registration (options: engine.registry.KindOptions) -----------------------------

    @overload
    def job(self, fn: F) -> F: ...

    @overload
    def job(self, fn: None = None, **options: Unpack[JobOptions]) -> Callable[[F], F]: ...

    def job(self, fn: F | None = None, **options: Unpack[JobOptions]) -> Any:
        """Register a handler ``fn(ctx, payload)`` as a job kind (its name unless ``kind=``).

        Options: ``payload``, ``idempotency`` (required), ``retry``, ``timeout``, ``kind``,
        ``queue``, ``priority``, ``chart``, ``idempotency_ttl``, and the global limits
        ``concurrency`` and ``rate`` (engine.registry.JobOptions).
        """
        check_options(options)

        def register(handler: F) -> F:
            self.registry.add(handler, options)
            return handler

        return register(fn) if fn is not None else register

    def flow(
        self,
        kind: str,
        chart: Chart,
        handlers: Mapping[str, Callable[..., Any] | StepHandler],
        **options: Unpack[KindOptions],
    ) -> JobSpec:
        """Register a multi-step job: ``chart`` (see ``statecharts.flow``) and one handler
        per state it runs work in, ``{state: fn}`` or ``{state: StepHandler(fn, retry=...,
        timeout=...)}``. ``retry`` and ``timeout`` are the defaults of every step.

        A handler ``fn(ctx, payload)`` returns the outcome to take (a trigger name or an
        Enum member; None when its state has one outcome, or "not yet" in a polling
        state). A chart and its handlers that do not match are refused here.
        """
        check_options(options, KIND_OPTIONS)
        return self.registry.add(
            _flow_entry(kind), {**options, "kind": kind, "chart": chart}, handlers=handlers
        )

    def cron(
        self,
        expr: str,
        *,
        tz: str = "UTC",
        name: str | None = None,
        misfire: Misfire = "skip",
        overlap: Overlap = "skip",
        max_catch_up: int = 10,
        grace: float | timedelta = 60.0,
        data: Payload = None,
        **options: Unpack[JobOptions],
    ) -> Callable[[F], F]:
        """Register a handler as a job kind (like ``job``) fired at each slot of ``expr``.

        ``expr`` is a cron expression read in the wall-clock time of ``tz``. Each slot
        fires one job, whatever the number of schedulers, with payload ``data`` (validated
        against ``payload`` now). The slot is the job's dedupe key; ``idempotency`` (default
        an Invariant naming the schedule) applies to enqueues by hand. See docs/triggers.md
        for ``misfire``, ``overlap``, ``grace`` and ``max_catch_up``. A malformed expression
        or an unknown zone is refused here with croniter's or zoneinfo's reason.
        """
        check_options(options)
        trigger = CronTrigger(expr, tz)
        policy = Policy(misfire, overlap, span(grace), max_catch_up)
        return scheduled_kind(
            self.registry, self.schedules, trigger, policy, name=name, data=data, options=options
        )

    def poller(
        self,
        every: float | timedelta,
        *,
        anchor: datetime = EPOCH,
        name: str | None = None,
        misfire: Misfire = "once",
        overlap: Overlap = "skip",
        max_catch_up: int = 10,
        grace: float | timedelta = 60.0,
        data: Payload = None,
        **options: Unpack[JobOptions],
    ) -> Callable[[F], F]:
        """Register a handler as a job kind run every ``every`` seconds.

        Slots fall at ``anchor + k * every`` (default anchor: the Unix epoch), so a long
        run never makes the cadence drift. By default a poll is skipped while the previous
        one is unfinished, and after downtime one poll runs at once (misfire ``once``).
        Otherwise as ``cron``.
        """
        check_options(options)
        trigger = IntervalTrigger(span(every), anchor)
        policy = Policy(misfire, overlap, span(grace), max_catch_up)
        return scheduled_kind(
            self.registry, self.schedules, trigger, policy, name=name, data=data, options=options
        )

    def schedule(
        self,
        kind: str,
        *,
        cron: str | None = None,
        every: float | timedelta | None = None,
        tz: str = "UTC",
        anchor: datetime = EPOCH,
        name: str | None = None,
        misfire: Misfire | None = None,
        overlap: Overlap = "skip",
        max_catch_up: int = 10,
        grace: float | timedelta = 60.0,
        payload: Payload = None,
    ) -> Schedule:
        """Attach a schedule (``cron=`` expression or ``every=`` seconds) to a registered kind.

        ``payload`` is the payload each fired job gets (as in ``enqueue``), validated now.
        ``name`` defaults to the kind; give it when one kind has several schedules.
        ``misfire`` defaults to skip for cron and once for ``every``.
        """
        return attach_schedule(
            self.registry,
            self.schedules,
            kind,
            cron=cron,
            every=every,
            tz=tz,
            anchor=anchor,
            name=name,
            misfire=misfire,
            overlap=overlap,
            max_catch_up=max_catch_up,
            grace=grace,
            payload=payload,
        )

    def limit_queue(
        self, queue: str, *, concurrency: int | None = None, rate: Rate | None = None
    ) -> Limit:
        """Limit every job of ``queue``, whatever its kind, across all workers and hosts:
        at most ``concurrency`` running, at most ``rate`` starts per period."""
        if not isinstance(queue, str) or not queue:
            raise RegistrationError(f"limit_queue: a queue name is a non-empty str, got {queue!r}")
        limit = make_limit(f"queue {queue!r}", concurrency, rate)
        if limit is None:
            raise RegistrationError(f"limit_queue({queue!r}): pass concurrency=, rate= or both")
        self.registry.limits.set(Scope("queue", queue), limit)
        return limit

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
        if kind not in self._enqueued_kinds:  # once per kind: another app's kind is refused
            check_enqueue(self.registry.get(kind), self.store)
            self._enqueued_kinds.add(kind)
        if connection is None:  # (inside the caller's transaction a second writer would wait)
            self.record_versions()
        return enqueuing.enqueue_many(
            self,
            kind,
            payloads,
            delay=delay,
            run_at=run_at,
            priority=priority,
            queue=queue,
            correlation_id=correlation_id,
            connection=connection,
        )

    def ready_to_enqueue(self, kind: str, *, record: bool = True) -> bool:
        """Whether ``kind``'s once-per-process checks are done (the async client does them
        in a thread first, so its enqueue never waits on them inside the event loop)."""
        return (
            self._store is not None
            and kind in self._enqueued_kinds
            and (not record or self._recorded == len(self.registry))
        )

    def prepare_enqueue(self, kind: str, *, record: bool = True) -> None:
        """Open the store, check ``kind``'s owner and (``record``) record the chart
        versions, once. Not ``record`` inside a caller's transaction: on SQLite a second
        writer would wait for that very transaction."""
        if kind not in self._enqueued_kinds:
            check_enqueue(self.registry.get(kind), self.store)
            self._enqueued_kinds.add(kind)
        if record:
            self.record_versions()

    # -- the async client (engine.aclient) -------------------------------------------------

    async def aenqueue(
        self,
        kind: str,
        payload: BaseModel | dict[str, Any] | None = None,
        *,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        correlation_id: str | None = None,
        connection: Any = None,
    ) -> int:
        """``enqueue`` for async apps: never blocks the event loop. ``connection``: the
        app's SQLAlchemy ``AsyncConnection`` or ``AsyncSession`` (in its open transaction)
        to write the job in; the other options as for ``enqueue``."""
        ids = await self.aenqueue_many(
            kind,
            [payload],
            delay=delay,
            run_at=run_at,
            priority=priority,
            queue=queue,
            correlation_id=correlation_id,
            connection=connection,
        )
        return ids[0]

    async def aenqueue_many(
        self,
        kind: str,
        payloads: Sequence[BaseModel | dict[str, Any] | None],
        *,
        delay: float | timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        correlation_id: str | None = None,
        connection: Any = None,
    ) -> list[int]:
        """``enqueue_many`` for async apps (see ``aenqueue``)."""
        return await self._async.enqueue_many(
            kind,
            payloads,
            connection=connection,
            delay=delay,
            run_at=run_at,
            priority=priority,
            queue=queue,
            correlation_id=correlation_id,
        )

    async def aget(self, job_id: int) -> JobView:
        return await self._async.get(job_id)

    async def acancel(self, job_id: int) -> str:
        return await self._async.cancel(job_id)

    async def arequeue(self, job_id: int) -> None:
        await self._async.requeue(job_id)

    async def aclose(self) -> None:
        """Close the async pool of the running event loop (then ``close`` the rest)."""
        await self._async.close()

    # -- the tick (engine.tick) and its verbs ----------------------------------------------

    def tick(
        self,
        now: datetime | None = None,
        *,
        limit: int | None = None,
        executor: Executor | None = None,
        queues: Sequence[str] | None = None,
    ) -> TickReport:
        """One pass: rescue expired leases, fire due schedules, claim due jobs, run them,
        commit their transitions. ``queues``: claim only jobs of these queues (None: all)."""
        return run_pass(
            self,
            self._rescuer,
            self._scheduler,
            now=now,
            limit=limit or self.batch_size,
            executor=executor,
            queues=queues,
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
        nxt = self.schedules.sooner(self.store.job_next_due(self.registry.claimable))
        if nxt is None:
            return ceiling
        return min(max((nxt - self.now()).total_seconds(), 0.0), ceiling)

    def claim_due(
        self,
        now: datetime,
        limit: int,
        *,
        queues: Sequence[str] | None = None,
        start: bool = False,
    ) -> claiming.Batch:
        """Fire due schedules, then claim up to ``limit`` due jobs (the worker's claim;
        ``start``: their handlers start at once, recorded by the claim itself)."""
        return claim_due(self, self._scheduler, now, limit, queues, start)

    def claim(
        self, now: datetime, limit: int, *, queues: Sequence[str] | None = None
    ) -> claiming.Batch:
        """Claim up to ``limit`` due jobs under one new lease (engine.claim)."""
        return claiming.claim(self, now, limit, queues=queues)

    def mark_started(
        self, batch: claiming.Batch, jobs: list[Claimed], now: datetime
    ) -> list[Claimed]:
        """Record that ``jobs``' handlers start now; return those still under the lease
        (a job asked to cancel since its claim is cancelled instead of run)."""
        return claiming.mark_started(self, batch, jobs, now)

    def commit(self, outcomes: Iterable[Outcome], now: datetime) -> TickReport:
        """Persist every outcome's transition in one transaction (engine.commit)."""
        return committing.commit(self, outcomes, now)

    def rescue(
        self, now: datetime, limit: int | None = None, exclude: Sequence[int] = ()
    ) -> TickReport:
        """Hand on jobs whose lease expired (engine.services.rescue)."""
        return self._rescuer.run_once(now, limit=limit, exclude=exclude)

    def fire_schedules(self, now: datetime | None = None) -> int:
        """Fire the due slots of every schedule; returns how many jobs were created."""
        if not self.schedules:
            return 0
        return self._scheduler.run_once(self.now() if now is None else now)

    def hand_back(self, jobs: Iterable[Claimed], *, started: bool, now: datetime) -> TickReport:
        """Give up held jobs at once (a worker shutting down): unstarted ones are released,
        running ones expire (attempt counted, due at once); see engine.commit.hand_back."""
        return committing.hand_back(self, jobs, started=started, now=now)

    def renew(self, batch_token: str, job_ids: list[int], now: datetime) -> set[int]:
        """Heartbeat: extend the lease of running jobs; returns the ids still held."""
        expires = now + timedelta(seconds=self.lease_seconds)
        return self.store.lease_renew(job_ids, batch_token, expires)

    # -- operators -----------------------------------------------------------------------

    def retain(
        self, state: str, after: float | timedelta | None, *, kind: str | None = None
    ) -> None:
        """Retention policy: workers delete jobs (of ``kind``, or any kind without a rule of
        its own) that ended in final ``state`` once ``after`` has passed since; None keeps
        them (the default for every state: nothing is pruned unless a rule says so).

        ``engine.retain("succeeded", timedelta(days=7))``,
        ``engine.retain("cancelled", 30 * 86400)``, and quarantined jobs kept for an
        operator unless named. Dedupe keys stay until their TTL whatever the rule."""
        finals = {
            s.name for c in (*self.registry.charts, lifecycle()) for s in c.states if s.is_final
        }
        if state not in finals:
            raise RegistrationError(
                f"retain: {state!r} is not a final state of any chart here: {sorted(finals)}"
            )
        if kind is not None:
            self.registry.get(kind)  # an unknown kind is refused here, not ignored
        if after is None:
            return
        span = after if isinstance(after, timedelta) else timedelta(seconds=after)
        self.retention.add(Rule(state, span, kind))

    def prune(
        self, older_than: float | timedelta, *, include_quarantined: bool = False
    ) -> tuple[int, int]:
        """Delete final jobs (with their events and steps) finished more than ``older_than`` ago.

        Quarantined jobs wait for an operator, so they stay unless ``include_quarantined``.
        Dedupe keys outlive their jobs until their TTL: pruning never reopens a key early.
        Returns (jobs deleted, expired keys deleted).
        """
        age = older_than if isinstance(older_than, timedelta) else timedelta(seconds=older_than)
        return Pruner(self, PruneConfig(age, include_quarantined)).run_once(self.now())

    def key_holder(self, kind: str, key: str) -> int | None:
        """The id of the job holding dedupe key (kind, key), even after it was pruned."""
        row = self.store.key_get(kind, key)
        return row.job_id if row is not None else None

    def get(self, job_id: int) -> JobView:
        """The job's state, attempts, timing, last error and full history."""
        return job_view(self.store, job_id)

    def requeue(self, job_id: int) -> None:
        """Operator action: a quarantined (or cancelled) job gets a fresh run from pending."""
        operators.requeue(self, job_id)

    def cancel(self, job_id: int) -> str:
        """Cancel a job that has not finished; returns the state it moved to ("cancelled",
        or a compensating step) or "requested".

        A job no handler holds takes its chart's cancel at once (to ``cancelled``, or to a
        compensating step a flow declares). A job a handler holds gets a cancel request: the
        handler sees ``ctx.cancelled``, ``ctx.step`` stops before its next step, and the job
        then takes the cancel instead of a retry or its next step (an outcome that ends the
        job stands: that work happened). A state the chart cannot be cancelled from refuses.
        """
        return operators.cancel(self, job_id)

    def overlay(
        self, chart: str, window: float | timedelta = 3600.0, *, kind: str | None = None
    ) -> Overlay:
        """Live figures for ``render --live``: jobs per state of ``chart`` (of one ``kind``
        of it, or of all its kinds) and the age of each state's oldest (since its last
        change), transitions per edge in ``window``."""
        span_ = window if isinstance(window, timedelta) else timedelta(seconds=window)
        return live_overlay(self.store, chart, self.now(), span_, kind=kind)

    def chart_of(self, name: str) -> Chart | None:
        """The chart named ``name``: a registered one, or the built-in lifecycle."""
        return operators.chart_of(self, name)


def _flow_entry(kind: str) -> Callable[..., Any]:
    """A flow has no single handler; this stands in for it and says so if ever called."""

    def no_single_handler(*_args: Any) -> None:
        raise TypeError(f"job {kind!r} is a flow: its handlers run per state")

    return no_single_handler
