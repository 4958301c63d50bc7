"""The async client: enqueue, read and act on jobs from an async app without blocking its
event loop (``Engine.aenqueue`` and friends).

- Inside the app's own transaction (an ``AsyncConnection`` or ``AsyncSession`` of
  SQLAlchemy's asyncio extension, on the same database): the jobs are written through
  that connection, so they exist if and only if the app commits. The same statements as
  ``enqueue(connection=...)`` run on the app's async driver (SQLAlchemy's ``run_sync``).
- On PostgreSQL, otherwise: on psycopg's async connection, through an async pool of the
  engine's own (one per event loop; ``jobcharts[async]`` installs SQLAlchemy's asyncio
  support). Each enqueue is one transaction on it.
- On SQLite (one file, one machine, no network to wait on): the sync enqueue, offloaded to
  a thread. Measured against the sync call in docs/performance.md.

``aget``, ``acancel`` and ``arequeue`` run the sync operator actions in a thread: they are
rare, and each is a few statements.

The first enqueue of a kind in a process checks its owner and records the chart versions
(``Engine.enqueue``); that is done in a thread too, once.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from engine.errors import MissingExtra

if TYPE_CHECKING:
    from engine.engine import Engine
    from engine.view import JobView

ASYNC_HINT = (
    "the async client on PostgreSQL needs SQLAlchemy's asyncio support: "
    "pip install 'jobcharts[async]'"
)

Payload = BaseModel | dict[str, Any] | None


class AsyncClient:
    """The async face of one Engine (``engine.aenqueue`` etc. delegate here)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # One async pool per event loop: an asyncio connection belongs to its loop.
        self._pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    async def enqueue_many(
        self, kind: str, payloads: Sequence[Payload], *, connection: Any = None, **options: Any
    ) -> list[int]:
        engine = self.engine
        record = connection is None  # (in the app's transaction a second writer would wait)
        if not engine.ready_to_enqueue(kind, record=record):
            await asyncio.to_thread(engine.prepare_enqueue, kind, record=record)

        def insert(sync_connection: Any) -> list[int]:
            return engine.enqueue_many(kind, payloads, connection=sync_connection, **options)

        if connection is not None:  # the app's AsyncConnection or AsyncSession
            return await connection.run_sync(insert)  # type: ignore[no-any-return]
        if engine.store.dialect != "postgresql":
            return await asyncio.to_thread(engine.enqueue_many, kind, payloads, **options)
        pool = self._pool()
        async with pool.begin() as conn:
            return await conn.run_sync(insert)  # type: ignore[no-any-return]

    def _pool(self) -> Any:
        """This event loop's async engine on the database (psycopg's async connection)."""
        loop = asyncio.get_running_loop()
        pool = self._pools.get(loop)
        if pool is None:
            try:
                import greenlet  # type: ignore[import-untyped]  # noqa: F401  (run_sync's)
                from sqlalchemy.ext.asyncio import create_async_engine
            except ModuleNotFoundError as error:
                raise MissingExtra(ASYNC_HINT) from error
            pool = create_async_engine(self.engine.url, pool_size=5, max_overflow=10)
            self._pools[loop] = pool
        return pool

    async def close(self) -> None:
        """Close this event loop's async pool (the others close with their loops)."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.dispose()

    async def get(self, job_id: int) -> JobView:
        return await asyncio.to_thread(self.engine.get, job_id)

    async def cancel(self, job_id: int) -> str:
        return await asyncio.to_thread(self.engine.cancel, job_id)

    async def requeue(self, job_id: int) -> None:
        await asyncio.to_thread(self.engine.requeue, job_id)
