"""``python -m engine.harness.bench_dashboard URL``: the dashboard's pages timed over a
database of ``--jobs`` jobs (default 1,000,000).

URL is a SQLite file (``sqlite:////tmp/dash.db``) or a PostgreSQL database (created when
missing). Its jobcharts tables are dropped, created again by the engine's migrations and
filled with jobs of the kinds of ``tests.engine.cli_app`` (all on the built-in chart
"lifecycle") as a few days of a busy app leave them: ~97% succeeded, ~1% quarantined
(``permanent`` and ``exhausted``, with their errors), a few cancelled, a backlog of
pending jobs, some running and some waiting to retry; each job with its history (~3
events), its dedupe key, and a last hour busier than the days before. ``--reuse`` keeps a
database that already holds that many jobs.

Each page is requested once to warm up, then ``--repeat`` times, in process (Starlette's
TestClient). The overview's one-second cache is off, so every overview figure is a fresh
read; the background stats (a whole-table read) are computed once before the timing and
then held off (``--live-stats`` leaves them on). ``--statements K`` replays the SQL of
each page's last request, one statement at a time with every row fetched, and lists the
K slowest.
"""

from __future__ import annotations

import argparse
import html
import os
import platform
import random
import re
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, func, insert, inspect, select, text
from sqlalchemy.engine import make_url

from engine.engine import Engine
from engine.store.connect import backend_name, redact, sqlite_path, with_schema
from engine.store.migrate import VERSION_TABLE
from engine.store.schema import idempotency_keys, job_events, jobs, metadata

BUDGET_MS = 200.0  # the goal: every page under this at a million jobs
CHUNK = 20_000  # jobs per transaction of the fill
DAYS = 7  # the jobs' creation times span this many days, the last hour busier
KEY_TTL = timedelta(days=7)  # the kinds' default idempotency_ttl
CHART = "lifecycle"
WORKERS = ("app-1:4101", "app-2:4102", "app-3:4103", "app-4:4104")
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/engine/attempt.py", line 103, in _run_attempt\n'
    "    result = step.handler(ctx, payload)\n"
    "             ^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
    '  File "/srv/app/tests/engine/cli_app.py", line {line}, in {kind}\n'
    "    raise {raised}\n"
    "{error}: {message}\n"
)


# -- the fill --------------------------------------------------------------------------------


@dataclass
class Rows:
    """One chunk of synthetic rows, as ``insert()`` parameters."""

    jobs: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    keys: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Synthesis:
    """Generates ``n`` jobs in id order (ids 1..n), created over ``DAYS`` days up to ``now``.

    By id: the oldest 97% over the days before the last hour, the rest in the last hour;
    the newest 0.5% are still pending (a backlog), the 0.01% before them running, and the
    ``always_fails`` jobs of the last twelve minutes wait to retry. The others are
    finished: ``reject`` quarantined (permanent), ``always_fails`` quarantined after its
    two attempts (exhausted), 0.2% of the rest cancelled, everything else succeeded.
    """

    n: int
    now: datetime
    chart_version: str
    seed: int = 7
    rng: random.Random = field(init=False)
    event_id: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.pending_from = self.n - max(1, self.n // 200)
        self.running_from = self.pending_from - max(1, self.n // 10_000)
        self.recent_from = self.n - max(1, self.n * 3 // 100)
        self.retry_from = self.n - (self.n - self.recent_from) // 5
        self.start = self.now - timedelta(days=DAYS)

    def created(self, i: int) -> datetime:
        """When job ``i`` was enqueued."""
        if i < self.recent_from:
            span = timedelta(days=DAYS) - timedelta(hours=1)
            return self.start + span * (i / self.recent_from)
        share = (i - self.recent_from) / (self.n - self.recent_from)
        return self.now - timedelta(hours=1) + timedelta(minutes=59, seconds=55) * share

    def chunks(self, size: int = CHUNK) -> Iterator[Rows]:
        """Every job's rows, ``size`` jobs at a time."""
        for first in range(0, self.n, size):
            rows = Rows()
            for i in range(first, min(first + size, self.n)):
                self.add(i, rows)
            yield rows

    def add(self, i: int, rows: Rows) -> None:
        """Job ``i`` (id ``i + 1``): its row, its events and its dedupe key."""
        rng = self.rng
        job_id = i + 1
        draw = rng.random()
        kind = (
            "reject"
            if draw < 0.006
            else "always_fails"
            if draw < 0.010
            else "slow"
            if draw < 0.030
            else "pay"
            if draw < 0.270
            else "ship"
        )
        created = self.created(i)
        payload, key = _payload(kind, job_id)
        worker = WORKERS[i % len(WORKERS)]
        job: dict[str, Any] = {
            "id": job_id,
            "kind": kind,
            "chart": CHART,
            "state": "pending",
            "payload": payload,
            "result": None,
            "idempotency_key": key,
            "attempt": 0,
            "max_attempts": {"always_fails": 2, "pay": 1}.get(kind, 5),
            "priority": 0,
            "queue": "default",
            "due_at": None,
            "deadline": None,
            "lease_token": None,
            "lease_expires_at": None,
            "started_at": None,
            "version": 0,
            "correlation_id": f"{rng.getrandbits(128):032x}",
            "last_error_class": None,
            "last_error_message": None,
            "last_error_traceback": None,
            "quarantine_reason": None,
            "created_at": created,
            "updated_at": created,
            "finished_at": None,
            "cancel_requested_at": None,
            "chart_version": self.chart_version,
            "trace_context": None,
        }
        events = [self.event(job_id, "enqueue", None, "pending", 0, created, worker)]
        if i >= self.pending_from:
            job["due_at"] = created
        elif i >= self.running_from:
            started = self.now - timedelta(seconds=rng.uniform(0.1, 20.0))
            job.update(
                state="running",
                attempt=1,
                version=1,
                started_at=started,
                updated_at=started,
                lease_token=f"{rng.getrandbits(64):016x}",
                lease_expires_at=started + timedelta(seconds=30),
            )
            events.append(self.event(job_id, "start", "pending", "running", 1, started, worker))
        elif kind == "ship" and rng.random() < 0.002:
            cancelled = created + timedelta(seconds=rng.uniform(0.5, 60.0))
            job.update(state="cancelled", version=1, updated_at=cancelled, finished_at=cancelled)
            detail = {"operator": "ops", "via": "dashboard"}
            events.append(
                self.event(job_id, "cancel", "pending", "cancelled", 0, cancelled, None, detail)
            )
        else:
            self.run(i, job, events, worker)
        job["updated_at"] = max(job["updated_at"], events[-1]["at"])
        rows.jobs.append(job)
        rows.events.extend(events)
        rows.keys.append(
            {
                "kind": kind,
                "key": key,
                "job_id": job_id,
                "created_at": created,
                "expires_at": created + KEY_TTL,
                "final_state": None,
                "result": None,
            }
        )

    def run(self, i: int, job: dict[str, Any], events: list[dict[str, Any]], worker: str) -> None:
        """Job ``i`` claimed and run to its end (or, ``always_fails`` lately, to a retry)."""
        rng = self.rng
        job_id, kind = job["id"], job["kind"]
        started = job["created_at"] + timedelta(seconds=rng.uniform(0.02, 2.0))
        took = timedelta(seconds=1.5 if kind == "slow" else rng.uniform(0.003, 0.3))
        ended = started + took
        events.append(self.event(job_id, "start", "pending", "running", 1, started, worker))
        job.update(attempt=1, version=2, started_at=started, updated_at=ended)
        if kind in ("ship", "pay", "slow"):
            result = {
                "ship": {"shipped": job_id},
                "pay": None,
                "slow": job["payload"].get("marker"),
            }
            job.update(state="succeeded", result=result[kind], finished_at=ended)
            events.append(self.event(job_id, "succeed", "running", "succeeded", 1, ended, worker))
            return
        if kind == "reject":
            address = job["payload"]["address"]
            self.quarantine(job, events, worker, ended, f"{address!r} is not a deliverable address")
        else:
            self.fail_twice(i, job, events, worker, ended)

    def quarantine(
        self,
        job: dict[str, Any],
        events: list[dict[str, Any]],
        worker: str,
        at: datetime,
        message: str,
    ) -> None:
        """``reject``: its one attempt raised Permanent."""
        detail = {"error": "Permanent", "message": message, "reason": "permanent"}
        events.append(
            self.event(job["id"], "fail_permanent", "running", "quarantined", 1, at, worker, detail)
        )
        _failed(job, "Permanent", message, "permanent", at)

    def fail_twice(
        self,
        i: int,
        job: dict[str, Any],
        events: list[dict[str, Any]],
        worker: str,
        at: datetime,
    ) -> None:
        """``always_fails``: quarantined after its two attempts, or (lately) waiting to
        retry after its first."""
        rng = self.rng
        job_id = job["id"]
        error, message = "ConnectionError", f"upstream down for order {job_id}"
        retry_in = rng.uniform(0.0, 600.0) if i >= self.retry_from else 0.0
        detail = {"error": error, "message": message, "retry_in": round(retry_in, 3)}
        events.append(self.event(job_id, "fail", "running", "retry_wait", 1, at, worker, detail))
        if i >= self.retry_from:
            job.update(
                state="retry_wait",
                due_at=at + timedelta(seconds=retry_in),
                last_error_class=error,
                last_error_message=message,
                last_error_traceback=_traceback("always_fails", error, message),
            )
            return
        again = at + timedelta(seconds=rng.uniform(0.01, 0.5))
        last = again + timedelta(seconds=rng.uniform(0.003, 0.3))
        events.append(self.event(job_id, "start", "retry_wait", "running", 2, again, worker))
        ended = {"error": error, "message": message, "reason": "exhausted"}
        events.append(self.event(job_id, "fail", "running", "quarantined", 2, last, worker, ended))
        job.update(attempt=2, version=4, started_at=again)
        _failed(job, error, message, "exhausted", last)

    def event(
        self,
        job_id: int,
        trigger: str,
        source: str | None,
        dest: str,
        attempt: int,
        at: datetime,
        worker: str | None,
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The next history row (event ids grow with time, as the engine's do)."""
        self.event_id += 1
        return {
            "id": self.event_id,
            "job_id": job_id,
            "trigger": trigger,
            "from_state": source,
            "to_state": dest,
            "attempt": attempt,
            "at": at,
            "worker": worker,
            "detail": detail,
        }


def _payload(kind: str, job_id: int) -> tuple[dict[str, Any], str]:
    """The payload of job ``job_id`` of ``kind`` and its idempotency key (cli_app's rules)."""
    if kind == "reject":
        address = f"{job_id} Nowhere Lane"
        return {"address": address}, f"reject:{address}"
    if kind == "slow":
        marker = f"markers/slow-{job_id}"
        return {"marker": marker, "seconds": 1.5}, f"slow:{marker}"
    prefix = "fail" if kind == "always_fails" else kind
    return {"order_id": job_id, "note": ""}, f"{prefix}:{job_id}"


def _traceback(kind: str, error: str, message: str) -> str:
    """A traceback as the handler's failure would have recorded it."""
    raised = "Permanent(...)" if error == "Permanent" else "ConnectionError(...)"
    line = 43 if kind == "reject" else 48
    return TRACEBACK.format(line=line, kind=kind, raised=raised, error=error, message=message)


def _failed(job: dict[str, Any], error: str, message: str, reason: str, at: datetime) -> None:
    """Finish ``job`` quarantined at ``at`` for ``reason``, with its last error."""
    job.update(
        state="quarantined",
        finished_at=at,
        updated_at=at,
        last_error_class=error,
        last_error_message=message,
        last_error_traceback=_traceback(job["kind"], error, message),
        quarantine_reason=reason,
    )


def prepare(url: str, n: int, *, reuse: bool) -> bool:
    """Make ``url``'s database ready for a fill: create a missing PostgreSQL database, drop
    jobcharts' tables (a SQLite file is removed). Returns True when ``reuse`` and it
    already holds ``n`` jobs (then nothing is dropped)."""
    backend = backend_name(url)
    if backend == "postgresql":
        _create_pg_database(url)
    elif backend != "sqlite" or sqlite_path(url) is None:
        raise SystemExit(f"a SQLite file or PostgreSQL URL, please: {redact(url)}")
    if reuse and _reusable(url, n):
        return True
    path = sqlite_path(url)
    if path is not None:
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
        return False
    db = create_engine(with_schema(url))
    try:
        with db.begin() as conn:
            metadata.drop_all(conn)
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {VERSION_TABLE}")
    finally:
        db.dispose()
    return False


def _create_pg_database(url: str) -> None:
    """Create the database ``url`` names unless it exists (through the ``postgres`` one)."""
    parsed = make_url(with_schema(url))
    name = parsed.database or "postgres"
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if found is None:
                quoted = conn.dialect.identifier_preparer.quote_identifier(name)
                conn.exec_driver_sql(f"CREATE DATABASE {quoted}")
    finally:
        admin.dispose()


def _reusable(url: str, n: int) -> bool:
    """Whether the database holds ``n`` jobs in tables with the columns and indexes this
    code's schema has (a migration edited since the fill makes it stale)."""
    path = sqlite_path(url)
    if path is not None and not Path(path).exists():
        return False
    db = create_engine(with_schema(url))
    try:
        with db.connect() as conn:
            found = inspect(conn)
            for table in (jobs, job_events, idempotency_keys):
                if not found.has_table(table.name):
                    return False
                if set(table.c.keys()) - {c["name"] for c in found.get_columns(table.name)}:
                    return False
                indexes = {
                    (i["name"], tuple(i["column_names"])) for i in found.get_indexes(table.name)
                }
                if indexes != {(i.name, tuple(c.name for c in i.columns)) for i in table.indexes}:
                    return False
            return int(conn.execute(select(func.count()).select_from(jobs)).scalar_one()) == n
    finally:
        db.dispose()


def fill(engine: Engine, n: int, *, seed: int, echo: Any = print) -> float:
    """Fill the engine's (freshly migrated) database with ``n`` synthetic jobs; returns the
    seconds it took. PostgreSQL's tables are vacuumed and analyzed afterwards, as
    autovacuum would; SQLite is left without statistics, as the engine leaves it."""
    started = time.perf_counter()
    engine.open()
    engine.record_versions()
    engine.own_kinds()
    version = engine.registry.versions[CHART][1]
    store = engine.store
    synthesis = Synthesis(n, engine.now(), version, seed)
    done = 0
    for rows in synthesis.chunks():
        with store.write() as conn:
            conn.execute(insert(jobs), rows.jobs)
            conn.execute(insert(job_events), rows.events)
            conn.execute(insert(idempotency_keys), rows.keys)
        done += len(rows.jobs)
        if done % 200_000 < CHUNK:
            took = time.perf_counter() - started
            echo(f"  {done:>9,} jobs, {synthesis.event_id:,} events ({took:.0f} s)")
    if store.dialect == "postgresql":
        with store.write() as conn:
            for table in ("jobs", "job_events"):
                conn.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), :top)"),
                    {"top": n if table == "jobs" else synthesis.event_id},
                )
        admin = store.db.execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
    return time.perf_counter() - started


# -- the pages -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """Jobs whose ids and keys some pages name: a quarantined job, a key, a correlation id."""

    quarantined: int
    key: str
    key_job: int
    correlation_id: str
    correlation_job: int

    def finds(self) -> dict[str, str]:
        """What each search page must show: a link to the job searched for."""
        return {
            f"/jobs?q={self.key}": f'/jobs/{self.key_job}"',
            f"/jobs?q={self.correlation_id}": f'/jobs/{self.correlation_job}"',
        }


def sample(engine: Engine, n: int) -> Sample:
    """Jobs from the middle of the table (not the newest, which any cache would favour);
    the correlation id is one of the latest jobs a search by correlation id looks through
    (``SEARCH_RECENT``), halfway down them."""
    from engine.web.views import SEARCH_RECENT

    keyed, searched = n // 3, max(1, n - min(n, SEARCH_RECENT) // 2)
    with engine.store.read() as conn:
        quarantined = conn.execute(
            select(jobs.c.id)
            .where(jobs.c.id >= n // 2, jobs.c.state == "quarantined")
            .order_by(jobs.c.id)
            .limit(1)
        ).scalar_one()
        key = conn.execute(select(jobs.c.idempotency_key).where(jobs.c.id == keyed)).scalar_one()
        correlation = conn.execute(
            select(jobs.c.correlation_id).where(jobs.c.id == searched)
        ).scalar_one()
    return Sample(int(quarantined), str(key), keyed, str(correlation), searched)


def pages(s: Sample) -> list[str]:
    """The pages timed (the issue's, then a few filters whose matches sit far from the
    end of the table a page starts at); ``NEXT`` stands for the second page of the
    quarantined jobs."""
    return [
        "/",
        "/panel",
        "/panel?window=24h",
        f"/charts/{CHART}.svg",
        "/jobs",
        "/jobs?state=quarantined",
        NEXT,
        "/jobs?state=succeeded&kind=ship",
        "/jobs?state=pending",
        "/jobs?kind=reject",
        "/jobs?older=1d",
        f"/jobs?older={DAYS - 1}d",  # the oldest jobs: far from the newest ids
        "/jobs?state=succeeded",
        "/jobs?kind=ship",
        f"/jobs?q={s.key}",
        f"/jobs?q={s.correlation_id}",
        f"/jobs/{s.quarantined}",
        f"/jobs/{s.quarantined}/chart.svg",
        "/bulk?action=requeue&state=quarantined",
        "/bulk?action=cancel&state=pending",  # the oldest pending: far from the lowest ids
        # Filters no index holds, matching nothing: each searches one window of ids.
        "/jobs?state=succeeded&reason=nope",
        "/jobs?state=succeeded&queue=nope",
        "/jobs?newer=1s",
        "/bulk?action=requeue&reason=nope",
        "/bulk?action=cancel&newer=1s",
        "/schedules",
    ]


NEXT = "(second page of /jobs?state=quarantined)"
NEXT_LINK = re.compile(r'id="next-page" href="([^"]+)"')


@dataclass
class StatementLog:
    """The SQL statements (and their parameters) the engine's pool runs while ``on``."""

    on: bool = False
    seen: list[tuple[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, engine: Engine) -> None:
        @event.listens_for(engine.store.db, "before_cursor_execute")
        def _seen(_conn: Connection, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if self.on:
                with self._lock:
                    self.seen.append((statement, params))

    def take(self) -> list[tuple[str, Any]]:
        with self._lock:
            seen, self.seen = self.seen, []
        return seen


def replay(engine: Engine, seen: Sequence[tuple[str, Any]]) -> list[tuple[float, str]]:
    """Each statement run again alone, every row fetched: its milliseconds, slowest first
    (the driver's execute alone would hide SQLite's work past the first row)."""
    timed = []
    with engine.store.read() as conn:
        for statement, params in seen:
            if not _query(statement):
                continue
            started = time.perf_counter()
            conn.exec_driver_sql(statement, params).fetchall()
            ms = (time.perf_counter() - started) * 1000
            timed.append((ms, f"{_short(statement)}  {params!r}"[:600]))
    return sorted(timed, reverse=True)


def _query(statement: str) -> bool:
    """Not BEGIN, COMMIT or ROLLBACK."""
    return not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK"))


COLUMNS = re.compile(r"SELECT (?:jobs\.\w+, ){5,}jobs\.\w+ FROM")


def _short(statement: str) -> str:
    """A statement on one line, every column of ``jobs`` selected shown as ``jobs.*``."""
    return COLUMNS.sub("SELECT jobs.* FROM", " ".join(statement.split()))


@dataclass(frozen=True)
class Timing:
    """One page's timed requests."""

    page: str
    samples: list[float]  # milliseconds
    queries: int  # statements the last request ran (BEGIN and COMMIT aside)
    statements: list[tuple[float, str]]  # those replayed (``--statements``), slowest first

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def time_pages(
    engine: Engine,
    n: int,
    *,
    repeat: int,
    live_stats: bool,
    explain: bool = False,
    echo: Any = print,
) -> list[Timing]:
    """Request each page once, then ``repeat`` times timed; every answer must be a 200.
    ``explain``: replay the statements of each page's last request, timing each."""
    from starlette.testclient import TestClient

    from engine.web import Access, create_app

    app = create_app(engine, access=Access())
    dashboard = app.state.dashboard
    dashboard.overviews.fresh = 0.0  # each request reads the overview afresh
    log = StatementLog()
    log.install(engine)
    s = sample(engine, n)
    timings = []
    with TestClient(app) as client:
        _get(client, "/")  # starts the stats in the background: wait for them
        if not live_stats:
            dashboard.stats.every = float("inf")
        stats_wait = time.perf_counter()
        while (latest := dashboard.stats.latest())[1] is None and latest[3] is None:
            time.sleep(0.1)
        echo(
            f"background stats (jobcharts stats): {latest[2]:.1f} s"
            + (f" (failed: {latest[3]})" if latest[3] else "")
            + f"; waited {time.perf_counter() - stats_wait:.1f} s"
        )
        for page in pages(s):
            path = page
            if page == NEXT:
                found = NEXT_LINK.search(_get(client, "/jobs?state=quarantined"))
                if found is None:
                    raise SystemExit("/jobs?state=quarantined shows no next page")
                path = html.unescape(found.group(1))
            shown = _get(client, path)
            if path in s.finds() and s.finds()[path] not in shown:
                raise SystemExit(f"GET {path} does not find {s.finds()[path]}")
            samples = []
            for _ in range(repeat):
                log.take()
                log.on = True
                started = time.perf_counter()
                _get(client, path)
                samples.append((time.perf_counter() - started) * 1000)
                log.on = False
            seen = log.take()
            statements = replay(engine, seen) if explain else []
            label = path if page != NEXT else f"{path} (page 2)"
            queries = sum(1 for statement, _ in seen if _query(statement))
            timings.append(Timing(label, samples, queries, statements))
    return timings


def _get(client: Any, path: str) -> str:
    """The page's HTML; anything but a 200 ends the run."""
    response = client.get(path)
    if response.status_code != 200:
        raise SystemExit(f"GET {path}: {response.status_code}\n{response.text[:2000]}")
    return str(response.text)


def table(timings: Sequence[Timing], *, statements: int) -> str:
    """Median and max milliseconds per page; ``!`` marks a median over ``BUDGET_MS``."""
    width = max(len(t.page) for t in timings)
    lines = [f"{'page':<{width}}  {'median ms':>9}  {'max ms':>8}  queries", "-" * (width + 40)]
    for t in timings:
        flag = "  !" if t.median > BUDGET_MS else ""
        lines.append(
            f"{t.page:<{width}}  {t.median:>9.1f}  {max(t.samples):>8.1f}  {t.queries:>7}{flag}"
        )
        for ms, sql in t.statements[:statements]:
            lines.append(f"    {ms:8.1f} ms  {sql}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Fill (or reuse) the database, time the pages, print the table."""
    parser = argparse.ArgumentParser(prog="python -m engine.harness.bench_dashboard")
    parser.add_argument("url", help="sqlite:////path/file.db or postgresql+psycopg://...")
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reuse", action="store_true", help="keep a database of --jobs jobs")
    parser.add_argument(
        "--live-stats", action="store_true", help="let the background stats refresh meanwhile"
    )
    parser.add_argument(
        "--statements",
        type=int,
        default=0,
        metavar="K",
        help="replay each page's SQL alone and show its K slowest statements",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1000 or args.repeat < 1:
        parser.error("--jobs is at least 1000 and --repeat at least 1")
    from tests.engine.cli_app import engine

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; database: {redact(args.url)}"
    )
    reused = prepare(args.url, args.jobs, reuse=args.reuse)
    engine.bind(args.url)
    if reused:
        print(f"reusing {args.jobs:,} jobs")
    else:
        print(f"filling {args.jobs:,} jobs")
        seconds = fill(engine, args.jobs, seed=args.seed)
        print(f"filled in {seconds:.0f} s")
    timings = time_pages(
        engine,
        args.jobs,
        repeat=args.repeat,
        live_stats=args.live_stats,
        explain=args.statements > 0,
    )
    print(f"\n{args.jobs:,} jobs; one warm-up, then {args.repeat} requests per page")
    print(table(timings, statements=args.statements))
    engine.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
