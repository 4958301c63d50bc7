"""The payout flow with adapters that keep their calls in a SQLite file and crash on cue.

For the crash tests' worker subprocesses: ``--app tests.engine.flow_app:make``. The file
named by ``$FLOW_EFFECTS`` holds ``calls`` (every call that reached the gateway or the
mailer, repeats included) and ``crashes`` (which (step, attempt) already killed a worker).
A handler SIGKILLs its own worker the first time it reaches a cue listed in
``$FLOW_CRASH_AT`` (comma-separated: ``status`` kills during the first settlement check,
after the charge step committed; ``notify`` kills before mailing).
"""

from __future__ import annotations

import os
import signal
import sqlite3
from contextlib import closing
from typing import Any

from docs.examples.payout import payout_chart, register
from engine import Engine


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ["FLOW_EFFECTS"], timeout=30)
    conn.execute("create table if not exists calls (key text, what text)")
    conn.execute("create table if not exists crashes (cue text primary key)")
    return conn


def _record(key: str, what: str) -> None:
    with closing(_db()) as conn, conn:
        conn.execute("insert into calls values (?, ?)", (key, what))


def crash_once(cue: str) -> None:
    """SIGKILL this process the first time ``cue`` is reached, if the test asked for it."""
    if cue not in os.environ.get("FLOW_CRASH_AT", "").split(","):
        return
    with closing(_db()) as conn, conn:
        if conn.execute("select 1 from crashes where cue = ?", (cue,)).fetchone():
            return
        conn.execute("insert into crashes values (?)", (cue,))
    os.kill(os.getpid(), signal.SIGKILL)


class FileGateway:
    def charge(self, key: str, amount_cents: int) -> dict[str, Any]:
        _record(key, "charge")
        return {"ok": True, "charge_id": f"ch:{key}"}

    def find(self, key: str) -> dict[str, Any] | None:
        with closing(_db()) as conn:
            found = conn.execute(
                "select 1 from calls where key = ? and what = 'charge'", (key,)
            ).fetchone()
        return {"ok": True, "charge_id": f"ch:{key}"} if found else None

    def status(self, charge_id: str) -> str:
        crash_once("status")
        return "settled"

    def refund(self, key: str, charge_id: str) -> dict[str, Any]:
        _record(key, "refund")
        return {"refunded": charge_id}


class FileMailer:
    def send(self, key: str, to: str, text: str) -> None:
        crash_once("notify")
        _record(key, "mail")


FAST = payout_chart(every=0.2, deadline=3600)  # checks 0.2 s apart: the test runs in seconds


def make(url: str | None = None) -> Engine:
    engine = Engine(url)
    register(engine, FileGateway(), FileMailer(), FAST)
    return engine
