"""Bulk actions started from the dashboard run in a background thread, so a requeue of
half a million jobs neither holds an HTTP request open for minutes nor dies with it; the
run's page shows its report as its batches commit (``engine.bulk.apply``'s ``on_batch``).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine import bulk
from engine.bulk import Report
from engine.engine import Engine
from engine.store.bulk import JobFilter

KEEP = 50  # finished runs remembered (in memory: a restart forgets them, not their events)


@dataclass
class Run:
    """One bulk action: who started it, on what, and its report so far."""

    id: str
    action: str
    filter: JobFilter
    filter_query: str
    operator: str
    started_at: datetime
    report: Report | None = None
    error: str | None = None
    done: bool = False


@dataclass
class Runs:
    """The dashboard's bulk runs, newest last."""

    engine: Engine
    _runs: OrderedDict[str, Run] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self, action: str, f: JobFilter, filter_query: str, detail: dict[str, Any]) -> Run:
        """Start ``action`` over ``f`` in a thread (checked first: ``bulk.trigger_of``);
        ``detail`` goes into every event."""
        bulk.trigger_of(action, f)
        run = Run(
            uuid.uuid4().hex[:12],
            action,
            f,
            filter_query,
            str(detail.get("operator", "?")),
            self.engine.now(),
        )
        with self._lock:
            self._runs[run.id] = run
            while len(self._runs) > KEEP:
                self._runs.popitem(last=False)

        def work() -> None:
            def progress(report: Report) -> None:
                run.report = report

            try:
                run.report = bulk.apply(
                    self.engine, action, f, detail=detail, run=run.id, on_batch=progress
                )
            except Exception as error:  # shown on the run's page; the batches done stay done
                run.error = f"{type(error).__name__}: {error}"
            finally:
                run.done = True

        threading.Thread(target=work, name=f"jobcharts-bulk-{run.id}", daemon=True).start()
        return run

    def get(self, run_id: str) -> Run | None:
        with self._lock:
            return self._runs.get(run_id)
