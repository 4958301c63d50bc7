"""The worker: a loop of ticks that sleeps until the next due job and stops cleanly."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import structlog
from sqlalchemy.exc import DBAPIError

from engine.core import Engine, TickReport

logger = structlog.get_logger("jobcharts")

MAX_ERROR_BACKOFF = 30.0


class Worker:
    """Runs ``engine.tick`` in a loop with handlers on a pool of ``concurrency`` threads.

    ``stop()`` (or a set ``stop_event``) ends the loop after the running handlers finish
    and their transitions commit: nothing is abandoned mid-attempt.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        concurrency: int = 1,
        poll_interval: float = 1.0,
        batch_size: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.engine = engine
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.batch_size = batch_size or max(engine.batch_size, concurrency)
        self.stop_event = threading.Event()
        self.totals = TickReport()

    def stop(self) -> None:
        self.stop_event.set()

    def run(self, *, max_ticks: int | None = None) -> TickReport:
        """Tick until stopped (or ``max_ticks`` ticks); returns what was done in all."""
        logger.info(
            "worker.started",
            worker=self.engine.worker_id,
            kinds=list(self.engine.registry.kinds),
            concurrency=self.concurrency,
            db=_redact(self.engine.url),
        )
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="jobcharts")
        ticks = 0
        error_backoff = 0.0
        try:
            while not self.stop_event.is_set():
                if max_ticks is not None and ticks >= max_ticks:
                    break
                ticks += 1
                try:
                    executor = pool if self.concurrency > 1 else None
                    report = self.engine.tick(limit=self.batch_size, executor=executor)
                    error_backoff = 0.0
                except DBAPIError as error:
                    # The database is locked or gone. A failed claim committed nothing; a
                    # failed commit leaves its jobs running until their leases expire and
                    # they are rescued. Either way nothing is lost: wait and try again.
                    error_backoff = min(max(error_backoff * 2, 0.1), MAX_ERROR_BACKOFF)
                    logger.warning("worker.db_error", error=str(error.orig), retry_in=error_backoff)
                    self.stop_event.wait(error_backoff)
                    continue
                self.totals.add(report)
                if report.claimed == 0:
                    try:
                        pause = self.engine.sleep_for(self.poll_interval)
                    except DBAPIError:
                        pause = self.poll_interval
                    self.stop_event.wait(pause)
        finally:
            pool.shutdown(wait=True)
            logger.info("worker.stopped", worker=self.engine.worker_id, **vars(self.totals))
        return self.totals


def _redact(url: str) -> str:
    """A database URL without its password, for logs."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
