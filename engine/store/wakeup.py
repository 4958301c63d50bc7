"""Wake-ups: an idle worker claims as soon as something changed, not at its next poll.

PostgreSQL: an enqueue NOTIFYs, idle workers LISTEN. SQLite: a watcher reads the file's
``PRAGMA data_version`` (which moves whenever another connection commits: an enqueue from
any process on the machine) every few milliseconds, a few microseconds each time.
Polling stays as the fallback: a lost notification (or a listener reconnecting) only
delays a job until the worker's next poll.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable
from typing import Any, Self

import structlog
from sqlalchemy import Connection, text

from engine.store.connect import import_psycopg, libpq_conninfo

logger = structlog.get_logger("jobcharts")

CHANNEL = "jobcharts_wakeup"
RECONNECT_DELAY = 1.0
WATCH_INTERVAL = 0.005  # seconds between two looks at SQLite's data_version


def notify(conn: Connection, reason: str) -> None:
    """Queue a wake-up for listeners; PostgreSQL delivers it when the transaction commits."""
    conn.execute(
        text("SELECT pg_notify(:channel, :reason)"), {"channel": CHANNEL, "reason": reason}
    )


class _WakeThread:
    """A daemon thread that calls ``on_wake`` when the database changed, until stopped."""

    name = "jobcharts-wake"

    def __init__(self, on_wake: Callable[[], None]) -> None:
        self.on_wake = on_wake
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        raise NotImplementedError


class Listener(_WakeThread):
    """A thread holding one connection that LISTENs and calls ``on_wake`` per notification."""

    name = "jobcharts-listen"

    def __init__(self, url: str, on_wake: Callable[[], None]) -> None:
        super().__init__(on_wake)
        self.url = url

    def _run(self) -> None:
        # Its own connection, outside the pool: a LISTEN holds a connection for good, and
        # the pool's connections are for the tick and the handlers.
        psycopg = import_psycopg()
        conninfo = libpq_conninfo(self.url)
        while not self._stop.is_set():
            conn: Any = None
            try:
                # Keepalives: a connection silently cut (a partition) is noticed and redone.
                conn = psycopg.connect(
                    conninfo,
                    autocommit=True,
                    keepalives=1,
                    keepalives_idle=30,
                    keepalives_interval=10,
                    keepalives_count=3,
                )
                conn.execute(f"LISTEN {CHANNEL}")
                logger.debug("listener.listening", channel=CHANNEL)
                self.on_wake()  # jobs enqueued while we were not listening
                while not self._stop.is_set():
                    for _ in conn.notifies(timeout=0.5):
                        self.on_wake()
            except Exception as error:  # the server went away: poll meanwhile, then retry
                logger.warning("listener.disconnected", error=repr(error)[:300])
                self._stop.wait(RECONNECT_DELAY)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):  # closing a broken connection
                        conn.close()


class DataVersionWatcher(_WakeThread):
    """SQLite: a thread that calls ``on_wake`` when the database file changed.

    It holds its own read-only connection and never takes a lock: ``PRAGMA data_version``
    reads the WAL index in shared memory. The worker's own commits move it too; the wake
    that follows finds nothing to claim and costs one claim query.
    """

    name = "jobcharts-watch"

    def __init__(self, path: str, on_wake: Callable[[], None], interval: float = WATCH_INTERVAL):
        super().__init__(on_wake)
        self.path = path
        self.interval = interval

    def _run(self) -> None:
        while not self._stop.is_set():
            conn: sqlite3.Connection | None = None
            try:
                conn = sqlite3.connect(self.path, isolation_level=None)
                look = conn.cursor()
                seen = look.execute("PRAGMA data_version").fetchone()[0]
                while not self._stop.wait(self.interval):
                    version = look.execute("PRAGMA data_version").fetchone()[0]
                    if version != seen:
                        seen = version
                        self.on_wake()
            except sqlite3.Error as error:  # the file went away or is locked: poll meanwhile
                logger.warning("watcher.failed", error=repr(error)[:300])
                self._stop.wait(RECONNECT_DELAY)
            finally:
                if conn is not None:
                    conn.close()
