"""The async web-app example (docs/examples/async_shop.py) end to end, on both backends:
the shop served by uvicorn in a process of its own, a real HTTP request, a worker process
that runs the async handler against a fake carrier API, and the result read back over
HTTP. A request refused after its enqueue leaves neither the order nor the job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from engine import Engine

ROOT = Path(__file__).resolve().parents[2]
APP = "docs.examples.async_shop"


@dataclass
class Carrier:
    """A fake carrier API: ``POST /shipments`` books once per Idempotency-Key."""

    requests: int = 0
    bookings: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def book(self, key: str, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.requests += 1
            if key not in self.bookings:
                number = f"TRK-{len(self.bookings) + 1:04d}"
                self.bookings[key] = {"tracking_number": number, "address": body["address"]}
            return self.bookings[key]


@pytest.fixture
def carrier() -> Iterator[tuple[Carrier, str]]:
    state = Carrier()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length))
            key = self.headers.get("Idempotency-Key")
            if self.path != "/shipments" or not key:
                self.send_error(400)
                return
            answer = json.dumps(state.book(key, body)).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: Any) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(db_url: str, carrier_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "JOBCHARTS_DB": db_url,
        "CARRIER_URL": carrier_url,
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def shop(db_url: str, carrier: tuple[Carrier, str], tmp_path: Path) -> Iterator[str]:
    """The shop served by uvicorn in a subprocess; yields its base URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", f"{APP}:app", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--log-level", "warning"]
    log = tmp_path / "shop.log"  # a file, not a pipe: a full pipe would stall the server
    with log.open("w") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=environment(db_url, carrier[1]), stdout=output, stderr=output
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"the shop exited: {log.read_text()}")
            try:
                if httpx.get(f"{base}/orders/0", timeout=1).status_code == 404:
                    break  # serving, and its startup (the tables) is done
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the shop did not answer within 15 s: {log.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_worker(db_url: str, carrier_url: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "engine.cli", "--log-level", "warning", "worker"]
    command += ["--app", f"{APP}:engine", "--db", db_url, "--until-idle", "--poll", "0.1"]
    return subprocess.run(
        command,
        cwd=ROOT,
        env=environment(db_url, carrier_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def count(db_url: str, table: str) -> int:
    db = sa.create_engine(db_url)
    try:
        with db.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        db.dispose()


def test_an_order_is_shipped_by_the_worker(
    shop: str, carrier: tuple[Carrier, str], db_url: str
) -> None:
    """POST /orders enqueues ship_order; the worker books once with the carrier; GET
    /orders/{id} shows the job succeeded with the carrier's tracking number."""
    fake, carrier_url = carrier
    order = {"sku": "mug", "quantity": 2, "address": "1 Quay St, Dublin"}
    created = httpx.post(f"{shop}/orders", json=order, timeout=10)
    assert created.status_code == 201, created.text
    order_id, job_id = created.json()["order_id"], created.json()["job_id"]

    before = httpx.get(f"{shop}/orders/{order_id}", timeout=10).json()
    assert before["job"] == {"id": job_id, "state": "pending", "attempt": 0, "result": None}

    worker = run_worker(db_url, carrier_url)
    assert worker.returncode == 0, worker.stdout + worker.stderr

    shown = httpx.get(f"{shop}/orders/{order_id}", timeout=10).json()
    assert shown["order"] == {"id": order_id, **order, "job_id": job_id}
    assert shown["job"]["state"] == "succeeded", shown
    assert shown["job"]["result"] == "TRK-0001"
    assert fake.requests == 1
    assert fake.bookings == {
        f"order-{order_id}": {"tracking_number": "TRK-0001", "address": order["address"]}
    }


def test_a_refused_order_leaves_no_order_and_no_job(
    shop: str, carrier: tuple[Carrier, str], db_url: str
) -> None:
    """The stock check fails after the enqueue, inside the request's transaction: the
    rollback takes the order and the job back; the worker finds nothing to run."""
    refused = httpx.post(
        f"{shop}/orders", json={"sku": "poster", "quantity": 1, "address": "x"}, timeout=10
    )
    assert refused.status_code == 409, refused.text
    assert "not enough 'poster'" in refused.json()["error"]
    assert [count(db_url, t) for t in ("orders", "job_events", "idempotency_keys")] == [0, 0, 0]
    engine = Engine(db_url)
    try:
        assert engine.store.job_list() == []
    finally:
        engine.close()
    assert run_worker(db_url, carrier[1]).returncode == 0
    assert carrier[0].requests == 0
