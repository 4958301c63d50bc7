"""The async client on both backends: ``aenqueue`` stores and dedupes without blocking the
event loop, and inside the app's own async transaction (AsyncConnection, AsyncSession) a
job exists if and only if the app commits; ``aget``, ``acancel``, ``arequeue`` act."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from engine import Engine, Permanent, Worker


class Mail(BaseModel):
    to: str


@pytest.fixture
def app(db_url: str) -> Iterator[Engine]:
    engine = Engine(db_url)

    @engine.job(payload=Mail, idempotency=lambda m: f"mail:{m.to}", kind="mail")
    async def mail(ctx: Any, m: Mail) -> str:
        if m.to.startswith("bounce"):
            raise Permanent("mailbox does not exist")
        await asyncio.sleep(0)
        return f"sent to {m.to}"

    yield engine
    engine.close()


def async_url(url: str) -> str:
    """The same database through an async driver (the app's own async engine)."""
    return url.replace("sqlite://", "sqlite+aiosqlite://", 1)


def drain(engine: Engine) -> None:
    Worker(engine, concurrency=2, poll_interval=0.05).run(until_idle=True)


def test_aenqueue_stores_dedupes_and_runs(app: Engine) -> None:
    async def main() -> tuple[int, int, list[int]]:
        first = await app.aenqueue("mail", {"to": "ada@example.com"})
        again = await app.aenqueue("mail", Mail(to="ada@example.com"))
        many = await app.aenqueue_many("mail", [{"to": f"u{n}@example.com"} for n in range(3)])
        await app.aclose()
        return first, again, many

    first, again, many = asyncio.run(main())
    assert first == again and len(set(many)) == 3 and first not in many
    drain(app)

    async def read() -> list[str]:
        return [(await app.aget(j)).state for j in [first, *many]]

    assert asyncio.run(read()) == ["succeeded"] * 4
    assert app.get(first).result == "sent to ada@example.com"


def test_aenqueue_refuses_bad_input_and_stores_nothing(app: Engine) -> None:
    from pydantic import ValidationError

    async def main() -> None:
        with pytest.raises(ValidationError):
            await app.aenqueue("mail", {"to": 5})
        with pytest.raises(TypeError, match="priority"):
            await app.aenqueue("mail", {"to": "x@example.com"}, priority="high")
        await app.aclose()

    asyncio.run(main())
    assert app.store.job_list() == []


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
@pytest.mark.parametrize("how", ["connection", "session"])
def test_aenqueue_joins_the_apps_async_transaction(
    app: Engine, db_url: str, commit: bool, how: str
) -> None:
    async def main() -> int:
        app_engine = create_async_engine(async_url(db_url))
        job_id = 0
        try:
            if how == "connection":
                async with app_engine.connect() as conn:
                    await conn.begin()
                    job_id = await app.aenqueue("mail", {"to": "tx@example.com"}, connection=conn)
                    await (conn.commit() if commit else conn.rollback())
            else:
                async with AsyncSession(app_engine) as session:
                    job_id = await app.aenqueue(
                        "mail", {"to": "tx@example.com"}, connection=session
                    )
                    await (session.commit() if commit else session.rollback())
        finally:
            await app_engine.dispose()
            await app.aclose()
        return job_id

    job_id = asyncio.run(main())
    assert job_id > 0
    stored = app.store.job_get(job_id)
    assert (stored is not None) == commit
    with app.store.read() as conn:
        events = conn.execute(sa.text("SELECT count(*) FROM job_events")).scalar_one()
    assert events == (1 if commit else 0)


def test_acancel_and_arequeue(app: Engine) -> None:
    async def main() -> tuple[str, str, str]:
        bounced = await app.aenqueue("mail", {"to": "bounce@example.com"})
        later = await app.aenqueue("mail", {"to": "later@example.com"}, delay=3600)
        cancelled = await app.acancel(later)
        await asyncio.to_thread(drain, app)
        before = (await app.aget(bounced)).state
        await app.arequeue(bounced)
        after = (await app.aget(bounced)).state
        await app.aclose()
        return cancelled, before, after

    assert asyncio.run(main()) == ("cancelled", "quarantined", "pending")


def test_the_event_loop_keeps_running_while_jobs_are_enqueued(app: Engine) -> None:
    """A ticker task keeps ticking while 50 enqueues are awaited one after another."""

    async def main() -> int:
        ticks = 0
        stop = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        for n in range(50):
            await app.aenqueue("mail", {"to": f"t{n}@example.com"})
        stop.set()
        await task
        await app.aclose()
        return ticks

    assert asyncio.run(main()) >= 50  # at least one tick per enqueue awaited


def test_the_first_aenqueue_after_the_app_wrote_in_its_transaction(
    app: Engine, db_url: str
) -> None:
    """The app has already written in its transaction (on SQLite it holds the write lock)
    when it enqueues a kind for the first time: nothing may wait for that lock (the chart
    versions are recorded later, outside it). jobcharts' tables exist already, as they do
    once a worker has run or `jobcharts migrate`: creating them would need the lock."""
    app.store  # noqa: B018 - the schema, as a worker or `jobcharts migrate` leaves it

    async def main() -> int:
        app_engine = create_async_engine(async_url(db_url))
        try:
            async with app_engine.begin() as conn:
                await conn.execute(sa.text("CREATE TABLE IF NOT EXISTS orders (id INTEGER)"))
            async with app_engine.begin() as conn:
                await conn.execute(sa.text("INSERT INTO orders VALUES (1)"))
                return await asyncio.wait_for(
                    app.aenqueue("mail", {"to": "first@example.com"}, connection=conn), 10
                )
        finally:
            await app_engine.dispose()
            await app.aclose()

    job_id = asyncio.run(main())
    assert app.get(job_id).state == "pending"
