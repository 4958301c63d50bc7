"""The enqueue path: new jobs, their creation events and their dedupe keys, written with
fixed driver SQL (no statement built per call) and as few round trips as the backend allows.

- PostgreSQL, no keys: ONE statement (the clock, every job, every event and the NOTIFY in
  one data-modifying CTE, its rows from arrays, or from plain parameters for a lone job:
  two fixed texts, both prepared by psycopg); run in autocommit it is also its own
  transaction: one round trip per ``enqueue``.
- With keys: the keys are locked (PostgreSQL) and read in one statement each, the jobs
  whose key is live are answered with the holder's id, the rest inserted as above, and
  their keys taken by one conditional upsert; a key lost to a racing transaction (only
  possible inside a caller's older transaction) removes its job again.
- Many jobs go in multi-row statements (SQLite) or array statements (PostgreSQL).

Times: ``now`` is the insert time; None lets the database clock stamp the rows
(PostgreSQL's ``clock_timestamp()``, read once per statement).
"""

# ruff: noqa: S608 - statements are built from constants and placeholder counts; every
# value is a bound parameter.
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from functools import cache
from typing import Any

from engine.store.encode import json_text, sqlite_time
from engine.store.rows import NewJob

CHUNK = 500  # rows per multi-row statement (SQLite allows 32,766 bound values)

Result = list[tuple[int, bool]]  # per job, in order: (its id or the key holder's id, inserted)


Execute = Callable[[str, Any], Any]  # (sql, params) -> rows (a cursor or a result)


def insert_jobs_pg(
    execute: Execute, jobs: Sequence[NewJob], now: datetime | None, channel: str
) -> Result:
    """Insert ``jobs`` (deduped by key) with their creation events through ``execute``:
    in an open transaction, or in autocommit when none has a key (one statement)."""
    return _Postgres(execute, now, channel).insert(jobs)


def insert_keyed_job_pg(
    driver: Any, job: NewJob, now: datetime | None, channel: str
) -> tuple[int, bool] | None:
    """One keyed job in a transaction of its own on ``driver`` (a psycopg connection in
    autocommit, from ``Database.pg_autocommit``, which rolls back on an error): BEGIN,
    the key's lock and the dedupe-and-insert statement in one pipeline, then COMMIT: two
    round trips, against six on the general path. Returns (its id or the live holder's,
    inserted); None if the key was lost after all, with nothing kept: the caller then
    takes the general path."""
    params = _pg_values(job)
    params.update(now=now, channel=channel, ttl=job.key_ttl.total_seconds())
    lock = {"pairs": [f"{job.kind}\x1f{job.idempotency_key}"]}
    with driver.cursor() as begin, driver.cursor() as locked, driver.cursor() as cursor:
        with driver.pipeline():  # one Sync: BEGIN is a statement here, not psycopg's
            begin.execute("BEGIN")
            locked.execute(_Postgres.LOCK, lock)
            cursor.execute(_Postgres.INSERT_KEYED_ONE, params)
        job_id, inserted, taken = cursor.fetchone()
        cursor.execute("COMMIT" if taken else "ROLLBACK")
    return (int(job_id), bool(inserted)) if taken else None


def insert_jobs_sqlite(execute: Execute, jobs: Sequence[NewJob], now: datetime) -> Result:
    """Insert ``jobs`` (deduped by key) with their creation events in an open write
    transaction, through ``execute(sql, params)``: a sqlite3 cursor's own in the store's
    transactions (SQLAlchemy's execution layer would cost more than the statements), a
    Connection's ``exec_driver_sql`` in a caller's (its event hooks see our statements)."""
    return _SQLite(execute, now).insert(jobs)


class _Dialect:
    """The steps both backends share: dedupe by key, then insert the rest."""

    def __init__(self, execute: Execute, now: datetime | None) -> None:
        self._run = execute
        self.now = now

    def insert(self, jobs: Sequence[NewJob]) -> Result:
        if all(job.idempotency_key is None for job in jobs):
            return [(job_id, True) for job_id in self.insert_rows(jobs)]
        results: list[tuple[int, bool] | None] = [None] * len(jobs)
        first: dict[tuple[str, str], int] = {}  # (kind, key) -> index of its first job
        repeats: list[tuple[int, int]] = []  # (index, index of the first job with its key)
        fresh: list[int] = []
        for index, job in enumerate(jobs):
            if job.idempotency_key is None:
                fresh.append(index)
                continue
            pair = (job.kind, job.idempotency_key)
            if pair in first:
                repeats.append((index, first[pair]))
            else:
                first[pair] = index
                fresh.append(index)
        if first:
            self.lock_keys(sorted(first))
            held = self.live_holders(sorted(first))
            for pair, holder in held.items():
                results[first[pair]] = (holder, False)
            answered = {first[pair] for pair in held}
            fresh = [index for index in fresh if index not in answered]
        ids = self.insert_rows([jobs[i] for i in fresh]) if fresh else []
        keyed: list[tuple[int, NewJob, int]] = []
        for index, job_id in zip(fresh, ids, strict=True):
            results[index] = (job_id, True)
            if jobs[index].idempotency_key is not None:
                keyed.append((index, jobs[index], job_id))
        if keyed:
            lost = self.take_keys(keyed)
            if lost:
                # Another transaction took these keys since we read them (possible only
                # inside a caller's transaction that began before it committed): these
                # jobs must not exist; answer with the holder, as a duplicate enqueue.
                self.delete_jobs([job_id for _, _, job_id in keyed if job_id in lost])
                for index, _, job_id in keyed:
                    if job_id in lost:
                        results[index] = (lost[job_id], False)
        for index, first_index in repeats:
            answer = results[first_index]
            assert answer is not None
            results[index] = (answer[0], False)
        return [r for r in results if r is not None]

    def lock_keys(self, pairs: list[tuple[str, str]]) -> None:
        """Serialize writers of these keys until the transaction ends (PostgreSQL)."""

    def live_holders(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        raise NotImplementedError

    def insert_rows(self, jobs: Sequence[NewJob]) -> list[int]:
        raise NotImplementedError

    def take_keys(self, keyed: list[tuple[int, NewJob, int]]) -> dict[int, int]:
        """Give each job its key unless another job holds it live; return the losers
        (job id -> holder)."""
        raise NotImplementedError

    def delete_jobs(self, ids: list[int]) -> None:
        raise NotImplementedError


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


_JOB_COLUMNS = (
    "kind, chart, state, payload, idempotency_key, attempt, max_attempts, priority, queue, "
    "due_at, version, correlation_id, created_at, updated_at, chart_version, trace_context"
)
EVENT_INSERT_COLUMNS = "job_id, trigger, from_state, to_state, attempt, at, worker, detail"
_KEY_UPSERT_TAIL = (
    " ON CONFLICT (kind, key) DO UPDATE SET job_id = excluded.job_id,"
    " created_at = excluded.created_at, expires_at = excluded.expires_at,"
    " final_state = NULL, result = NULL"
    " WHERE idempotency_keys.job_id = excluded.job_id"
    " OR (idempotency_keys.expires_at <= excluded.created_at AND NOT EXISTS ("
    "SELECT 1 FROM jobs WHERE jobs.id = idempotency_keys.job_id AND jobs.finished_at IS NULL))"
    " RETURNING kind, key"
)
# A key is live unless it has expired and its job is final (or pruned).
_LIVE = "NOT ((j.id IS NULL OR j.finished_at IS NOT NULL) AND k.expires_at <= {now})"


@cache
def _sqlite_jobs(rows: int) -> str:
    row = "(?, ?, ?, ?, ?, 0, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)"
    return f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES {', '.join([row] * rows)} RETURNING id"


@cache
def _sqlite_events(rows: int) -> str:
    row = "(?, ?, NULL, ?, 0, ?, ?, ?)"
    return f"INSERT INTO job_events ({EVENT_INSERT_COLUMNS}) VALUES {', '.join([row] * rows)}"


class _SQLite(_Dialect):
    now: datetime  # always given: SQLite stamps rows with the local clock

    def __init__(self, execute: Execute, now: datetime) -> None:
        super().__init__(execute, now)
        self.stamp = sqlite_time(now)

    def live_holders(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        held: dict[tuple[str, str], int] = {}
        for chunk in _chunks(pairs):
            where = " OR ".join(["(k.kind = ? AND k.key = ?)"] * len(chunk))
            sql = (
                "SELECT k.kind, k.key, k.job_id FROM idempotency_keys AS k"
                f" LEFT JOIN jobs AS j ON j.id = k.job_id WHERE ({where})"
                f" AND {_LIVE.format(now='?')}"
            )
            params = [v for pair in chunk for v in pair] + [self.stamp]
            for kind, key, job_id in self._run(sql, params):
                held[(kind, key)] = int(job_id)
        return held

    def insert_rows(self, jobs: Sequence[NewJob]) -> list[int]:
        ids: list[int] = []
        for chunk in _chunks(jobs):
            params: list[Any] = []
            for job in chunk:
                due = job.due_at if job.due_at is not None else self.now + job.delay
                params += (
                    job.kind,
                    job.chart,
                    job.state,
                    job.payload,
                    job.idempotency_key,
                    job.max_attempts,
                    job.priority,
                    job.queue,
                    sqlite_time(due),
                    job.correlation_id,
                    self.stamp,
                    self.stamp,
                    job.chart_version,
                    job.trace_context,
                )
            # One statement's rows take increasing ids in VALUES order (its rowids).
            chunk_ids = sorted(int(r[0]) for r in self._run(_sqlite_jobs(len(chunk)), params))
            ids += chunk_ids
            params = []
            for job, job_id in zip(chunk, chunk_ids, strict=True):
                detail = json_text(job.detail)
                params += (job_id, job.trigger, job.state, self.stamp, job.worker, detail)
            self._run(_sqlite_events(len(chunk)), params)
        return ids

    def take_keys(self, keyed: list[tuple[int, NewJob, int]]) -> dict[int, int]:
        lost: dict[int, int] = {}
        for chunk in _chunks(keyed):
            row = "(?, ?, ?, ?, ?, NULL, NULL)"
            sql = (
                "INSERT INTO idempotency_keys (kind, key, job_id, created_at, expires_at,"
                f" final_state, result) VALUES {', '.join([row] * len(chunk))}" + _KEY_UPSERT_TAIL
            )
            params: list[Any] = []
            for _, job, job_id in chunk:
                expires = sqlite_time(self.now + job.key_ttl)
                params += (job.kind, job.idempotency_key, job_id, self.stamp, expires)
            taken = {(kind, key) for kind, key in self._run(sql, params)}
            for _, job, job_id in chunk:
                pair = (job.kind, str(job.idempotency_key))
                if pair not in taken:
                    lost[job_id] = self._holder(pair)
        return lost

    def _holder(self, pair: tuple[str, str]) -> int:
        sql = "SELECT job_id FROM idempotency_keys WHERE kind = ? AND key = ?"
        return int(self._run(sql, pair).fetchone()[0])

    def delete_jobs(self, ids: list[int]) -> None:
        for chunk in _chunks(ids):
            self._run(f"DELETE FROM jobs WHERE id IN ({', '.join('?' * len(chunk))})", chunk)


class _Postgres(_Dialect):
    """Fixed statement texts whatever the number of jobs (each prepared once): arrays for
    many jobs, plain parameters for one."""

    # The jobs of ``src`` (rows numbered ``i``) inserted at the clock ``t``.
    NEW_JOBS = f"""
new AS (
    INSERT INTO jobs ({_JOB_COLUMNS})
    SELECT kind, chart, state, payload::jsonb, key, 0, max_attempts, priority, queue,
        COALESCE(due_at, t.now + delay * interval '1 second'), 0, correlation_id, t.now, t.now,
        chart_version, trace_context
    FROM src, t ORDER BY i
    RETURNING id, state, created_at
),"""

    # The rows, the clock (read once), the events (matched to their jobs by position: one
    # statement's rows take increasing ids in input order) and the wake-up, in one statement.
    INSERT_TAIL = f"""{NEW_JOBS}
numbered AS (SELECT id, state, created_at, row_number() OVER (ORDER BY id) AS i FROM new),
events AS (
    INSERT INTO job_events ({EVENT_INSERT_COLUMNS})
    SELECT n.id, s.trigger, NULL, n.state, 0, n.created_at, s.worker, s.detail::jsonb
    FROM numbered AS n JOIN src AS s USING (i)
),
woken AS (SELECT pg_notify(%(channel)s, 'enqueue') AS sent)
SELECT n.id, n.created_at FROM numbered AS n, woken ORDER BY n.i
"""
    CLOCK = "WITH t AS (SELECT COALESCE(%(now)s::timestamptz, clock_timestamp()) AS now),"

    # Many jobs: one array per column (one statement text whatever their number).
    INSERT = f"""{CLOCK}
src AS (
    SELECT * FROM unnest(%(kind)b::text[], %(chart)b::text[], %(state)b::text[],
        %(payload)b::text[], %(key)b::text[], %(max_attempts)b::int[], %(priority)b::int[],
        %(queue)b::text[], %(due_at)b::timestamptz[], %(delay)b::float8[],
        %(correlation_id)b::text[], %(trigger)b::text[], %(worker)b::text[], %(detail)b::text[],
        %(chart_version)b::text[], %(trace_context)b::text[])
        WITH ORDINALITY AS s(kind, chart, state, payload, key, max_attempts, priority, queue,
            due_at, delay, correlation_id, trigger, worker, detail, chart_version, trace_context,
            i)
),{INSERT_TAIL}"""

    # One job's row from plain parameters, which psycopg dumps in a fraction of the time of
    # sixteen one-element arrays.
    ONE_JOB = """
    SELECT %(kind)s::text AS kind, %(chart)s::text AS chart, %(state)s::text AS state,
        %(payload)s::text AS payload, %(key)s::text AS key,
        %(max_attempts)s::int AS max_attempts, %(priority)s::int AS priority,
        %(queue)s::text AS queue, %(due_at)s::timestamptz AS due_at,
        %(delay)s::float8 AS delay, %(correlation_id)s::text AS correlation_id,
        %(trigger)s::text AS trigger, %(worker)s::text AS worker, %(detail)s::text AS detail,
        %(chart_version)s::text AS chart_version, %(trace_context)s::text AS trace_context,
        1::bigint AS i"""

    # One job (every single ``enqueue``): the same statement, its row from ONE_JOB.
    INSERT_ONE = f"""{CLOCK}
src AS ({ONE_JOB}
),{INSERT_TAIL}"""

    # One keyed job (``enqueue()`` with a key), after LOCK in the same transaction: the
    # key's live holder is read with a snapshot taken once the lock is held; without one,
    # the job, its event and its key are inserted and the NOTIFY sent. One row: (id,
    # inserted, whether the key was taken: false only if a writer that skips the lock
    # took it meanwhile).
    INSERT_KEYED_ONE = f"""{CLOCK}
held AS (
    SELECT k.job_id FROM idempotency_keys AS k
    LEFT JOIN jobs AS j ON j.id = k.job_id CROSS JOIN t
    WHERE k.kind = %(kind)s AND k.key = %(key)s AND {_LIVE.format(now="t.now")}
    FOR UPDATE OF k
),
src AS ({ONE_JOB}
    WHERE NOT EXISTS (SELECT 1 FROM held)
),{NEW_JOBS}
events AS (
    INSERT INTO job_events ({EVENT_INSERT_COLUMNS})
    SELECT n.id, s.trigger, NULL, n.state, 0, n.created_at, s.worker, s.detail::jsonb
    FROM new AS n, src AS s
),
taken AS (
    INSERT INTO idempotency_keys (kind, key, job_id, created_at, expires_at, final_state,
        result)
    SELECT %(kind)s, %(key)s, n.id, t.now, t.now + %(ttl)s * interval '1 second', NULL, NULL
    FROM new AS n, t{_KEY_UPSERT_TAIL}
),
woken AS (SELECT pg_notify(%(channel)s, 'enqueue') AS sent)
SELECT n.id, true, (SELECT count(*) FROM taken) = 1 FROM new AS n, woken
UNION ALL SELECT job_id, false, true FROM held
"""

    LOCK = (
        "SELECT clock_timestamp() FROM (SELECT count(pg_advisory_xact_lock("
        "hashtextextended(k, 0))) FROM unnest(%(pairs)b::text[]) AS k) AS locked"
    )

    LIVE = (
        "SELECT k.kind, k.key, k.job_id FROM idempotency_keys AS k"
        " JOIN unnest(%(kinds)b::text[], %(keys)b::text[]) AS p(kind, key)"
        " ON k.kind = p.kind AND k.key = p.key"
        " LEFT JOIN jobs AS j ON j.id = k.job_id"
        f" WHERE {_LIVE.format(now='%(now)s')} FOR UPDATE OF k"
    )

    TAKE = (
        "INSERT INTO idempotency_keys (kind, key, job_id, created_at, expires_at,"
        " final_state, result)"
        " SELECT kind, key, job_id, %(now)s, %(now)s + ttl * interval '1 second', NULL, NULL"
        " FROM unnest(%(kinds)b::text[], %(keys)b::text[], %(ids)b::bigint[],"
        " %(ttls)b::float8[]) AS p(kind, key, job_id, ttl)" + _KEY_UPSERT_TAIL
    )

    def __init__(self, execute: Execute, now: datetime | None, channel: str) -> None:
        super().__init__(execute, now)
        self.channel = channel

    def lock_keys(self, pairs: list[tuple[str, str]]) -> None:
        # Sorted, so two transactions locking overlapping keys cannot deadlock; the clock
        # is read after the locks are granted, so a wait for a lock ages nothing.
        locked = [f"{kind}\x1f{key}" for kind, key in pairs]
        db_now = self._run(self.LOCK, {"pairs": locked}).fetchone()[0]
        if self.now is None:
            self.now = db_now

    def live_holders(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        params = {"kinds": [p[0] for p in pairs], "keys": [p[1] for p in pairs], "now": self.now}
        return {(kind, key): int(job_id) for kind, key, job_id in self._run(self.LIVE, params)}

    def insert_rows(self, jobs: Sequence[NewJob]) -> list[int]:
        ids: list[int] = []
        for chunk in _chunks(jobs, 5000):
            if len(chunk) == 1:
                sql, params = self.INSERT_ONE, _pg_values(chunk[0])
            else:
                sql, params = self.INSERT, _pg_arrays(chunk)
            params["now"], params["channel"] = self.now, self.channel
            rows = self._run(sql, params).fetchall()
            ids += [int(row[0]) for row in rows]
            if self.now is None and rows:
                self.now = rows[0][1]  # the keys' times: the jobs' own creation time
        return ids

    def take_keys(self, keyed: list[tuple[int, NewJob, int]]) -> dict[int, int]:
        params = {
            "now": self.now,
            "kinds": [job.kind for _, job, _ in keyed],
            "keys": [job.idempotency_key for _, job, _ in keyed],
            "ids": [job_id for _, _, job_id in keyed],
            "ttls": [job.key_ttl.total_seconds() for _, job, _ in keyed],
        }
        taken = {(kind, key) for kind, key in self._run(self.TAKE, params)}
        lost: dict[int, int] = {}
        for _, job, job_id in keyed:
            pair = (job.kind, str(job.idempotency_key))
            if pair not in taken:
                sql = "SELECT job_id FROM idempotency_keys WHERE kind = %(kind)s AND key = %(key)s"
                holder = self._run(sql, {"kind": pair[0], "key": pair[1]}).fetchone()[0]
                lost[job_id] = int(holder)
        return lost

    def delete_jobs(self, ids: list[int]) -> None:
        self._run("DELETE FROM jobs WHERE id = ANY(%(ids)b::bigint[])", {"ids": ids})


# The insert statements' parameters and the NewJob field each comes from (``delay`` and
# ``detail`` are converted: seconds, JSON text).
_PG_PARAMS = [
    (param, NewJob._fields.index(field))
    for param, field in (
        ("kind", "kind"),
        ("chart", "chart"),
        ("state", "state"),
        ("payload", "payload"),
        ("key", "idempotency_key"),
        ("max_attempts", "max_attempts"),
        ("priority", "priority"),
        ("queue", "queue"),
        ("due_at", "due_at"),
        ("delay", "delay"),
        ("correlation_id", "correlation_id"),
        ("trigger", "trigger"),
        ("worker", "worker"),
        ("detail", "detail"),
        ("chart_version", "chart_version"),
        ("trace_context", "trace_context"),
    )
]


def _pg_values(job: NewJob) -> dict[str, Any]:
    """One job's parameters for ``INSERT_ONE``."""
    params: dict[str, Any] = {param: job[index] for param, index in _PG_PARAMS}
    params["delay"] = job.delay.total_seconds()
    params["detail"] = json_text(job.detail)
    return params


def _pg_arrays(jobs: Sequence[NewJob]) -> dict[str, Any]:
    """Many jobs' parameters for ``INSERT``: one list per column, in the jobs' order."""
    columns = list(zip(*jobs, strict=True))
    params: dict[str, Any] = {param: list(columns[index]) for param, index in _PG_PARAMS}
    params["delay"] = [delay.total_seconds() for delay in params["delay"]]
    params["detail"] = [json_text(detail) for detail in params["detail"]]
    return params
