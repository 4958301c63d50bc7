"""Idempotency keys in SQL: a key is taken by one job at a time, and stays live until it
has expired *and* its job is final. Functions over an open write transaction's connection.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, insert, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite

from engine.store.rows import NewJob
from engine.store.schema import idempotency_keys, jobs


def dialect_insert(dialect: str, table: Any) -> Any:
    """INSERT with ON CONFLICT for this dialect."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def lock_key(conn: Connection, dialect: str, kind: str, key: str) -> None:
    """PostgreSQL: serialize writers of one (kind, key) for the rest of the transaction,
    so every check below sees committed state (READ COMMITTED snapshots per statement
    would otherwise let a racing writer read a job that is not committed yet as absent).
    SQLite needs nothing: its write transactions are serialized already."""
    if dialect == "postgresql":
        conn.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
            {"k": f"{kind}\x1f{key}"},
        )


def insert_job(conn: Connection, dialect: str, job: NewJob) -> tuple[int, bool]:
    if job.idempotency_key is not None:
        lock_key(conn, dialect, job.kind, job.idempotency_key)
        existing = live_key(conn, dialect, job)
        if existing is not None:
            return existing, False
    values = {
        "kind": job.kind,
        "chart": job.chart,
        "state": job.state,
        "payload": job.payload,
        "idempotency_key": job.idempotency_key,
        "attempt": 0,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "queue": job.queue,
        "due_at": job.due_at,
        "version": 0,
        "correlation_id": job.correlation_id,
        "created_at": job.created_at,
        "updated_at": job.created_at,
    }
    job_id = int(conn.execute(insert(jobs).values(values).returning(jobs.c.id)).scalar_one())
    if job.idempotency_key is None:
        return job_id, True
    holder = take_key(
        conn, dialect, job.kind, job.idempotency_key, job_id, job.created_at, job.key_expires_at
    )
    if holder != job_id:
        # A concurrent transaction took the key first (possible when the caller's
        # transaction began before that one committed): this job must not exist.
        conn.execute(delete(jobs).where(jobs.c.id == job_id))
        return holder, False
    return job_id, True


def take_key(
    conn: Connection,
    dialect: str,
    kind: str,
    key: str,
    job_id: int,
    now: datetime,
    expires_at: datetime | None,
) -> int:
    """Give (kind, key) to ``job_id`` unless another job holds it live; return the holder.

    A key is live until it has expired *and* its job is final (or pruned). The takeover
    is one conditional upsert, so two racing writers cannot both win it.
    """
    key_values = {
        "job_id": job_id,
        "created_at": now,
        "expires_at": expires_at or now,
        "final_state": None,
        "result": None,
    }
    unfinished = (
        select(jobs.c.id)
        .where(jobs.c.id == idempotency_keys.c.job_id, jobs.c.finished_at.is_(None))
        .exists()
    )
    stmt = (
        dialect_insert(dialect, idempotency_keys)
        .values(kind=kind, key=key, **key_values)
        .on_conflict_do_update(
            index_elements=["kind", "key"],
            set_=key_values,
            where=or_(
                idempotency_keys.c.job_id == job_id,
                and_(idempotency_keys.c.expires_at <= now, ~unfinished),
            ),
        )
        .returning(idempotency_keys.c.job_id)
    )
    taken = conn.execute(stmt).scalar()
    if taken is not None:
        return int(taken)
    holder = conn.execute(
        select(idempotency_keys.c.job_id).where(
            idempotency_keys.c.kind == kind, idempotency_keys.c.key == key
        )
    ).scalar_one()
    return int(holder)


def live_key(conn: Connection, dialect: str, job: NewJob) -> int | None:
    """The job id holding (kind, key), unless the key expired and its job is final."""
    stmt = (
        select(
            idempotency_keys.c.job_id,
            idempotency_keys.c.expires_at,
            jobs.c.id.label("present"),
            jobs.c.finished_at,
        )
        .select_from(idempotency_keys.outerjoin(jobs, jobs.c.id == idempotency_keys.c.job_id))
        .where(idempotency_keys.c.kind == job.kind, idempotency_keys.c.key == job.idempotency_key)
    )
    if dialect == "postgresql":
        stmt = stmt.with_for_update(of=idempotency_keys)
    row = conn.execute(stmt).first()
    if row is None:
        return None
    finished = row.present is None or row.finished_at is not None
    if finished and row.expires_at <= job.created_at:
        return None  # expired, and its job can no longer run: the key may be reused
    return int(row.job_id)
