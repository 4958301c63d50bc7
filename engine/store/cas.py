"""The compare-and-set every state change is: apply a Move only if the job row is still
(id, state, version, lease token) as its planner read it, with its event row, atomically.

Fixed driver SQL, as on the enqueue path: these statements run for every claim, start and
outcome, where building them with SQLAlchemy cost more than running them.

- SQLite: one prepared UPDATE per move on the transaction's sqlite3 connection (its
  rowcount says whether that move applied), then the event rows in one executemany.
- PostgreSQL: one statement per set of columns written, over arrays (its text never
  changes, so psycopg prepares it): the updates, the events of the moves that applied,
  and the ids that applied, in one round trip.
"""

# ruff: noqa: S608 - statements are built from the schema's column names; values are bound.
from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import cache
from typing import Any

from sqlalchemy import BigInteger, Connection, Integer
from sqlalchemy.exc import DBAPIError

from engine.store.connect import import_psycopg
from engine.store.encode import json_text, sqlite_time
from engine.store.inserts import EVENT_INSERT_COLUMNS  # one list of the event columns
from engine.store.rows import EventRow, Move
from engine.store.schema import JSONDocument, UTCDateTime, jobs


def apply_moves(conn: Connection, moves: Sequence[Move], dialect: str) -> list[bool]:
    """Apply each move as a compare-and-set with its event row; return which applied.

    Moves are applied in order: a second move of the same job in one call applies only if
    it expects the row the first one left.
    """
    if not moves:
        return []
    if dialect == "postgresql":
        return _apply_postgres(conn.exec_driver_sql, moves)
    return _apply_sqlite(conn, moves)


# -- SQLite ----------------------------------------------------------------------------------


def _apply_sqlite(conn: Connection, moves: Sequence[Move]) -> list[bool]:
    driver: Any = conn.connection.driver_connection
    cursor = driver.cursor()
    try:
        applied = []
        for move in moves:
            columns = tuple(move.values)
            params = [_SQLITE_ENCODE[c](move.values[c]) for c in columns]
            params += [move.job_id, move.from_state, move.version, move.lease_token]
            cursor.execute(_sqlite_update(columns, move.unless_cancelled), params)
            applied.append(cursor.rowcount == 1)
        events = [
            _sqlite_event(m.job_id, m.event) for m, ok in zip(moves, applied, strict=True) if ok
        ]
        if events:
            cursor.executemany(_SQLITE_EVENT, events)
        return applied
    except sqlite3.Error as error:
        raise DBAPIError.instance(None, None, error, sqlite3.Error) from error
    finally:
        cursor.close()


@cache  # a handful of column sets: each statement built once (and prepared by sqlite3)
def _sqlite_update(columns: tuple[str, ...], unless_cancelled: bool) -> str:
    sets = ", ".join(f"{c} = ?" for c in columns)
    guard = " AND cancel_requested_at IS NULL" if unless_cancelled else ""
    return (
        f"UPDATE jobs SET {sets}, version = version + 1"
        f" WHERE id = ? AND state = ? AND version = ? AND lease_token IS ?{guard}"
    )


_SQLITE_EVENT = f"INSERT INTO job_events ({EVENT_INSERT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"


def _same(value: Any) -> Any:
    return value


def _sqlite_event(job_id: int, row: EventRow) -> tuple[Any, ...]:
    return (
        job_id,
        row.trigger,
        row.from_state,
        row.to_state,
        row.attempt,
        sqlite_time(row.at),
        row.worker,
        json_text(row.detail),
    )


def _encoder(column: Any) -> Callable[[Any], Any]:
    if isinstance(column.type, UTCDateTime):
        return sqlite_time
    if isinstance(column.type, JSONDocument):
        return json_text
    return _same


_SQLITE_ENCODE = {column.name: _encoder(column) for column in jobs.columns}


# -- PostgreSQL ------------------------------------------------------------------------------


def _apply_postgres(execute: Callable[[str, Any], Any], moves: Sequence[Move]) -> list[bool]:
    """The moves through ``execute(sql, params)`` (a SQLAlchemy connection's driver SQL, or
    a psycopg cursor's), one statement per round and column set."""
    applied = [False] * len(moves)
    for indexes in _rounds(moves):
        groups: dict[tuple[tuple[str, ...], bool], list[int]] = {}
        for i in indexes:
            move = moves[i]
            groups.setdefault((tuple(sorted(move.values)), move.unless_cancelled), []).append(i)
        for (columns, unless_cancelled), members in groups.items():
            group = [moves[i] for i in members]
            params = _pg_params(columns, group)
            done = {int(row[0]) for row in execute(_pg_update(columns, unless_cancelled), params)}
            for i in members:
                applied[i] = moves[i].job_id in done
    return applied


def one_statement(moves: Sequence[Move]) -> tuple[str, dict[str, Any]] | None:
    """PostgreSQL: the single statement that applies ``moves`` (one job each, one column
    set), or None when they need several. Alone it is its own transaction: a commit of
    finished attempts in one round trip, without BEGIN and COMMIT."""
    first = moves[0]
    columns = tuple(sorted(first.values))
    if len({m.job_id for m in moves}) != len(moves) or any(
        m.unless_cancelled != first.unless_cancelled or tuple(sorted(m.values)) != columns
        for m in moves
    ):
        return None
    return _pg_update(columns, first.unless_cancelled), _pg_params(columns, moves)


def apply_and_commit(driver: Any, moves: Sequence[Move]) -> list[bool]:
    """PostgreSQL, the end of a transaction of ``driver`` (a psycopg connection in
    autocommit, the transaction opened by an explicit BEGIN): the moves' statement and the
    COMMIT sent in one pipeline (one round trip instead of two). No moves, or moves that
    need several statements: those statements one after another, then the COMMIT."""
    psycopg = import_psycopg()
    single = one_statement(moves) if moves else None
    try:
        with driver.cursor() as cursor, driver.cursor() as commit:
            if single is None:
                applied = _apply_postgres(lambda sql, p: cursor.execute(sql, p).fetchall(), moves)
                commit.execute("COMMIT")
                return applied
            together = driver.pipeline() if psycopg.Pipeline.is_supported() else nullcontext()
            with together:  # one Sync for both
                cursor.execute(*single)
                commit.execute("COMMIT")
            done = {int(row[0]) for row in cursor.fetchall()}
    except psycopg.Error as error:
        sql, params = single or (None, None)
        raise DBAPIError.instance(sql, params, error, psycopg.Error) from error
    return [move.job_id in done for move in moves]


def _rounds(moves: Sequence[Move]) -> list[list[int]]:
    """Split the moves so no job appears twice in one round (one statement joins each job
    row once); the rounds run in order, as the moves would one by one."""
    rounds: list[list[int]] = []
    seen: dict[int, int] = {}
    for index, move in enumerate(moves):
        n = seen.get(move.job_id, 0)
        seen[move.job_id] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(index)
    return rounds


def _pg_type(column: Any) -> str:
    if isinstance(column.type, UTCDateTime):
        return "timestamptz"
    if isinstance(column.type, JSONDocument):
        return "text"  # sent as JSON text, cast to jsonb where it is written
    if isinstance(column.type, BigInteger):
        return "bigint"
    if isinstance(column.type, Integer):
        return "int"
    return "text"


@cache
def _pg_update(columns: tuple[str, ...], unless_cancelled: bool) -> str:
    sources = [("b_id", "bigint"), ("b_state", "text"), ("b_version", "int"), ("b_lease", "text")]
    sources += [(f"c_{c}", _pg_type(jobs.c[c])) for c in columns]
    sources += [
        ("e_trigger", "text"),
        ("e_from", "text"),
        ("e_to", "text"),
        ("e_attempt", "int"),
        ("e_at", "timestamptz"),
        ("e_worker", "text"),
        ("e_detail", "text"),
    ]
    arrays = ", ".join(f"%({name})b::{kind}[]" for name, kind in sources)
    names = ", ".join(name for name, _ in sources)
    sets = ", ".join(
        f"{c} = v.c_{c}" + ("::jsonb" if isinstance(jobs.c[c].type, JSONDocument) else "")
        for c in columns
    )
    guard = " AND j.cancel_requested_at IS NULL" if unless_cancelled else ""
    return f"""
WITH v AS (SELECT * FROM unnest({arrays}) AS v({names})),
u AS (
    UPDATE jobs AS j SET {sets}, version = j.version + 1
    FROM v
    WHERE j.id = v.b_id AND j.state = v.b_state AND j.version = v.b_version
        AND j.lease_token IS NOT DISTINCT FROM v.b_lease{guard}
    RETURNING j.id
),
e AS (
    INSERT INTO job_events ({EVENT_INSERT_COLUMNS})
    SELECT v.b_id, v.e_trigger, v.e_from, v.e_to, v.e_attempt, v.e_at, v.e_worker,
        v.e_detail::jsonb
    FROM v JOIN u ON u.id = v.b_id
)
SELECT id FROM u
"""


def _pg_params(columns: tuple[str, ...], moves: Sequence[Move]) -> dict[str, Any]:
    params: dict[str, Any] = {
        "b_id": [m.job_id for m in moves],
        "b_state": [m.from_state for m in moves],
        "b_version": [m.version for m in moves],
        "b_lease": [m.lease_token for m in moves],
        "e_trigger": [m.event.trigger for m in moves],
        "e_from": [m.event.from_state for m in moves],
        "e_to": [m.event.to_state for m in moves],
        "e_attempt": [m.event.attempt for m in moves],
        "e_at": [m.event.at for m in moves],
        "e_worker": [m.event.worker for m in moves],
        "e_detail": [json_text(m.event.detail) for m in moves],
    }
    for c in columns:
        encode = json_text if isinstance(jobs.c[c].type, JSONDocument) else _same
        params[f"c_{c}"] = [encode(m.values[c]) for m in moves]
    return params
