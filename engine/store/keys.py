"""Idempotency keys in SQL: a key is taken by one job at a time, and stays live until it
has expired *and* its job is final. Functions over an open write transaction's connection.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite

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
