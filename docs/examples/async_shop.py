"""A web shop (Starlette) that ships its orders with an async job.

``POST /orders`` writes the order, enqueues ``ship_order`` and reserves its stock in one
transaction of the app's own async database connection: the order and its job exist
together or not at all (an order refused for want of stock leaves neither). A worker runs
``ship_order``, an ``async def`` handler that books the parcel with the carrier's HTTP API
(httpx) inside ``ctx.astep``, so a retry never books twice. ``GET /orders/{id}`` shows the
order with its job's state and result (the tracking number).

Run it (``carrier`` below stands in for the carrier's API; see docs/async.md)::

    export JOBCHARTS_DB=sqlite:///shop.db CARRIER_URL=http://127.0.0.1:9000
    uvicorn docs.examples.async_shop:carrier --port 9000 &
    uvicorn docs.examples.async_shop:app --port 8000 &
    jobcharts worker --app docs.examples.async_shop:engine
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import sqlalchemy as sa
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from engine import Engine, JobContext, Permanent, RetryPolicy

engine = Engine(os.environ.get("JOBCHARTS_DB", "sqlite:///shop.db"))

# -- the app's own tables (beside jobcharts' in the same database) ------------------------

metadata = sa.MetaData()
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sku", sa.String(40), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("address", sa.String(200), nullable=False),
    sa.Column("job_id", sa.BigInteger),
)
stock = sa.Table(
    "stock",
    metadata,
    sa.Column("sku", sa.String(40), primary_key=True),
    sa.Column("available", sa.Integer, nullable=False),
)
OPENING_STOCK = {"mug": 100, "poster": 0}


class OrderIn(BaseModel):
    sku: str = Field(max_length=40)
    quantity: int = Field(gt=0)
    address: str = Field(max_length=200)


class Shipment(BaseModel):
    """The job's payload: what the carrier needs, so the job never reads the order table."""

    order_id: int
    sku: str
    quantity: int
    address: str


class OutOfStock(Exception):
    """Raised inside the order's transaction: the order and its job roll back together."""


# -- the job ------------------------------------------------------------------------------


@engine.job(
    payload=Shipment,
    idempotency=lambda s: f"ship:{s.order_id}",  # one shipment job per order
    retry=RetryPolicy(max_attempts=5, base=2.0, cap=60.0),
    timeout=30.0,  # past it the task is cancelled, and the attempt retried
)
async def ship_order(ctx: JobContext, shipment: Shipment) -> str:
    """Book the parcel with the carrier; the result is its tracking number."""

    async def book() -> dict[str, Any]:
        # The carrier's idempotency key covers the one gap astep leaves: a crash after the
        # booking but before its record is committed books again, with the same key.
        async with httpx.AsyncClient(base_url=carrier_url(), timeout=10.0) as http:
            response = await http.post(
                "/shipments",
                json={"reference": f"order-{shipment.order_id}", **shipment.model_dump()},
                headers={"Idempotency-Key": f"order-{shipment.order_id}"},
            )
        if response.is_client_error and response.status_code != 429:
            raise Permanent(f"the carrier refused the shipment: {response.text}")  # no retry
        response.raise_for_status()  # 5xx: an ordinary failure, retried with backoff
        return dict(response.json())

    # Recorded once it returns: a later attempt reads the booking instead of rebooking.
    booking: dict[str, Any] = await ctx.astep("book", book)
    return str(booking["tracking_number"])


def carrier_url() -> str:
    """Read when the job runs, so the worker's environment decides."""
    return os.environ.get("CARRIER_URL", "http://127.0.0.1:9000")


# -- the web app --------------------------------------------------------------------------


def async_url(url: str) -> sa.URL:
    """The engine's database through an async driver (same file, same search path)."""
    parsed = make_url(url)
    driver = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}
    return parsed.set(drivername=driver[parsed.get_backend_name()])


def database(request: Request) -> AsyncEngine:
    db: AsyncEngine = request.app.state.db
    return db


async def create_order(request: Request) -> JSONResponse:
    try:
        order = OrderIn.model_validate(await request.json())
    except (ValueError, ValidationError) as error:
        return JSONResponse({"error": str(error)}, status_code=422)
    try:
        async with database(request).begin() as conn:  # one transaction: commit or roll back
            order_id, job_id = await place(conn, order)
    except OutOfStock as error:
        return JSONResponse({"error": str(error)}, status_code=409)
    return JSONResponse({"order_id": order_id, "job_id": job_id}, status_code=201)


async def place(conn: AsyncConnection, order: OrderIn) -> tuple[int, int]:
    """Insert the order, enqueue its shipment, reserve its stock: all in ``conn``'s
    transaction. The stock check comes last on purpose, to show that a refusal after the
    enqueue takes the job back too."""
    insert = sa.insert(orders).values(**order.model_dump()).returning(orders.c.id)
    order_id: int = (await conn.execute(insert)).scalar_one()
    shipment = Shipment(order_id=order_id, **order.model_dump())
    job_id = await engine.aenqueue("ship_order", shipment, connection=conn)
    await conn.execute(sa.update(orders).where(orders.c.id == order_id).values(job_id=job_id))
    reserved = await conn.execute(
        sa.update(stock)
        .where(stock.c.sku == order.sku, stock.c.available >= order.quantity)
        .values(available=stock.c.available - order.quantity)
    )
    if reserved.rowcount != 1:
        raise OutOfStock(f"not enough {order.sku!r} in stock for {order.quantity}")
    return order_id, job_id


async def show_order(request: Request) -> JSONResponse:
    async with database(request).connect() as conn:
        query = sa.select(orders).where(orders.c.id == request.path_params["order_id"])
        row = (await conn.execute(query)).mappings().first()
    if row is None:
        return JSONResponse({"error": "no such order"}, status_code=404)
    job = await engine.aget(row["job_id"])
    return JSONResponse(
        {
            "order": dict(row),
            "job": {"id": job.id, "state": job.state, "attempt": job.attempt, "result": job.result},
        }
    )


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    """Open jobcharts' store, then create the app's tables beside it."""
    # Open jobcharts' store now (its tables, and the schema a ``?schema=`` URL names): on
    # SQLite a request's transaction that already wrote holds the lock creating them needs.
    await asyncio.to_thread(engine.open)
    db = create_async_engine(async_url(engine.url))
    async with db.begin() as conn:
        await conn.run_sync(metadata.create_all)
        if (await conn.execute(sa.select(sa.func.count()).select_from(stock))).scalar_one() == 0:
            await conn.execute(
                sa.insert(stock), [{"sku": s, "available": n} for s, n in OPENING_STOCK.items()]
            )
    app.state.db = db
    try:
        yield
    finally:
        await engine.aclose()
        await db.dispose()
        engine.close()


app = Starlette(
    routes=[
        Route("/orders", create_order, methods=["POST"]),
        Route("/orders/{order_id:int}", show_order, methods=["GET"]),
    ],
    lifespan=lifespan,
)

# -- a stand-in carrier, to try the example without a real one ----------------------------

BOOKINGS: dict[str, dict[str, str]] = {}


async def book_shipment(request: Request) -> JSONResponse:
    """Book once per Idempotency-Key, as real carrier APIs do: a repeat gets the first answer."""
    key = request.headers.get("Idempotency-Key")
    if not key:
        return JSONResponse({"error": "an Idempotency-Key header is required"}, status_code=400)
    body = await request.json()
    number = f"TRK-{len(BOOKINGS) + 1:04d}"
    booking = BOOKINGS.setdefault(key, {"tracking_number": number, "address": body["address"]})
    return JSONResponse(booking, status_code=201)


carrier = Starlette(routes=[Route("/shipments", book_shipment, methods=["POST"])])
