"""The compare-and-set every state change is: apply a Move only if the job row is still
(id, state, version, lease token) as its planner read it, with its event row, atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, update

from engine.store.rows import EventRow, Move
from engine.store.schema import job_events, jobs


def apply_moves(conn: Connection, moves: Sequence[Move], *, multi_rowcount: bool) -> list[bool]:
    """Apply each move as a compare-and-set with its event row; return which applied.

    Moves writing the same columns go in one executemany when the driver reports its
    rowcount (``multi_rowcount``); if any of them lost, the batch is redone row by row.
    """
    applied = [False] * len(moves)
    groups: dict[tuple[bool, tuple[str, ...]], list[int]] = {}
    for index, move in enumerate(moves):
        key = (move.unless_cancelled, tuple(sorted(move.values)))
        groups.setdefault(key, []).append(index)
    for (unless_cancelled, columns), indexes in groups.items():
        stmt = cas_update(columns, unless_cancelled)
        params = [cas_params(moves[i]) for i in indexes]
        if multi_rowcount and len(params) > 1:
            savepoint = conn.begin_nested()
            if conn.execute(stmt, params).rowcount == len(params):
                savepoint.commit()
                for i in indexes:
                    applied[i] = True
                continue
            # Some compare-and-set lost: undo the batch and learn which, row by row.
            savepoint.rollback()
        for i, param in zip(indexes, params, strict=True):
            applied[i] = conn.execute(stmt, param).rowcount == 1
    events = [event_params(m.job_id, m.event) for m, ok in zip(moves, applied, strict=True) if ok]
    if events:
        conn.execute(insert(job_events), events)
    return applied


@cache  # a handful of column sets: build (and compile) each statement once
def cas_update(columns: tuple[str, ...], unless_cancelled: bool = False) -> Any:
    conditions = [
        jobs.c.id == bindparam("b_id"),
        jobs.c.state == bindparam("b_state"),
        jobs.c.version == bindparam("b_version"),
        jobs.c.lease_token.is_not_distinct_from(bindparam("b_lease")),
    ]
    if unless_cancelled:
        conditions.append(jobs.c.cancel_requested_at.is_(None))
    values: dict[str, Any] = {c: bindparam(f"v_{c}") for c in columns}
    values["version"] = jobs.c.version + 1
    return update(jobs).where(and_(*conditions)).values(values)


def cas_params(move: Move) -> dict[str, Any]:
    params = {f"v_{k}": v for k, v in move.values.items()}
    params.update(
        b_id=move.job_id, b_state=move.from_state, b_version=move.version, b_lease=move.lease_token
    )
    return params


def event_params(job_id: int, row: EventRow) -> dict[str, Any]:
    return {
        "job_id": job_id,
        "trigger": row.trigger,
        "from_state": row.from_state,
        "to_state": row.to_state,
        "attempt": row.attempt,
        "at": row.at,
        "worker": row.worker,
        "detail": row.detail,
    }
