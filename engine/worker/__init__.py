"""Workers: the loop that claims, dispatches and commits (``worker``), the handler threads
(``threads``), process isolation (``processes``) and the multi-process supervisor."""

from engine.worker.worker import DEFAULT_THREADS, Worker

__all__ = ["DEFAULT_THREADS", "Worker"]
