"""Prometheus metrics (``pip install 'jobcharts[metrics]'``), fed by the engine's one
instrumentation point: a ``Metrics`` is a Telemetry subscriber, so no verb knows it exists.

Counters and histograms come from the events of this process:

- ``jobcharts_transitions_total{chart, kind, from_state, to_state, trigger}``: every
  persisted transition this process made (an attempt's outcome, a timer, a cancel, an
  operator's action, a rescue, a migration);
- ``jobcharts_attempts_total{kind, outcome}``: attempts by what they returned or raised
  (``succeed``, ``fail``, ``fail_permanent``, a flow's outcome...);
- ``jobcharts_rescues_total{kind, started}``: expired leases handed on, ``started`` "no"
  (the claimed handler never started) or "maybe" (it may have run);
- ``jobcharts_fenced_results_total{kind}``: results dropped because the attempt had lost
  its lease (timed out, rescued meanwhile);
- ``jobcharts_schedule_firings_total{schedule}`` and
  ``jobcharts_schedule_skips_total{schedule, reason}``;
- ``jobcharts_attempt_duration_seconds{kind}`` and ``jobcharts_lag_seconds{kind}`` (from a
  job's due time to its start), histograms.

Gauges come from the database, read by one worker at a time (``refresh_gauges``):
``jobcharts_jobs{kind, state}`` and ``jobcharts_oldest_due_age_seconds{kind}``.
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime
from typing import Any

from engine.errors import MissingExtra
from engine.events import Event
from engine.registry import Registry
from engine.store import Store

HINT = "metrics need prometheus_client: pip install 'jobcharts[metrics]'"
LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


def prometheus() -> Any:
    """prometheus_client, or a one-line MissingExtra naming the extra."""
    try:
        import prometheus_client
    except ModuleNotFoundError as error:
        raise MissingExtra(HINT) from error
    return prometheus_client


class Metrics:
    """The engine's metrics in one Prometheus registry (``registry``: a fresh one by
    default, so two engines in one process never clash)."""

    debug_events = frozenset({"jobs.claimed"})  # the one debug event it reads (lags)

    def __init__(self, registry: Registry, prom_registry: Any = None) -> None:
        pc = prometheus()
        self.kinds = registry
        self.registry = prom_registry if prom_registry is not None else pc.CollectorRegistry()
        multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        r = self.registry
        self.transitions = pc.Counter(
            "jobcharts_transitions",
            "Persisted transitions, by chart, kind, source, destination and trigger.",
            ["chart", "kind", "from_state", "to_state", "trigger"],
            registry=r,
        )
        self.attempts = pc.Counter(
            "jobcharts_attempts", "Finished attempts, by outcome.", ["kind", "outcome"], registry=r
        )
        self.rescues = pc.Counter(
            "jobcharts_rescues",
            "Expired leases handed on; started: no (never started) or maybe (may have run).",
            ["kind", "started"],
            registry=r,
        )
        self.fenced = pc.Counter(
            "jobcharts_fenced_results",
            "Results dropped because their attempt had lost its lease.",
            ["kind"],
            registry=r,
        )
        self.fired = pc.Counter(
            "jobcharts_schedule_firings", "Schedule slots fired.", ["schedule"], registry=r
        )
        self.skipped = pc.Counter(
            "jobcharts_schedule_skips",
            "Schedule slots skipped (misfire, overlap).",
            ["schedule", "reason"],
            registry=r,
        )
        self.duration = pc.Histogram(
            "jobcharts_attempt_duration_seconds",
            "Handler run time of each attempt.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.lag = pc.Histogram(
            "jobcharts_lag_seconds",
            "From a job's due time to the start of its attempt.",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        gauge_mode = {"multiprocess_mode": "livemax"} if multiprocess else {}
        self.jobs = pc.Gauge(
            "jobcharts_jobs",
            "Jobs per kind and state.",
            ["kind", "state"],
            registry=r,
            **gauge_mode,
        )
        self.oldest_due = pc.Gauge(
            "jobcharts_oldest_due_age_seconds",
            "Age of the oldest job due and not started, per kind (0: none).",
            ["kind"],
            registry=r,
            **gauge_mode,
        )

    def chart_of(self, kind: str) -> str:
        spec = self.kinds.find(kind)
        return spec.chart.name if spec is not None else "?"

    def __call__(self, event: Event) -> None:
        """The Telemetry subscriber: count what the event says happened."""
        name, f = event.name, event.fields
        kind = str(f.get("kind", "?"))
        if name == "attempt.finished":
            outcome = str(f.get("outcome"))
            self._child(self.attempts, kind, outcome).inc()
            self._child(self.duration, kind).observe(float(f.get("duration_ms", 0.0)) / 1000)
            if f.get("state") is not None:
                self._moved(kind, f.get("from_state"), f["state"], outcome)
        elif name == "jobs.claimed":
            for each, lag in f.get("lags", ()):
                self._child(self.lag, each).observe(max(lag, 0.0))
        elif name == "job.rescued":
            trigger = str(f.get("trigger"))
            self.rescues.labels(kind, "no" if trigger == "release" else "maybe").inc()
            self._moved(kind, f.get("from_state"), f.get("state"), trigger)
        elif name in ("attempt.fenced", "attempt.fenced_out"):
            self.fenced.labels(kind).inc()
        elif name == "schedule.fired":
            self.fired.labels(str(f.get("schedule"))).inc()
        elif name == "schedule.skipped":
            self.skipped.labels(str(f.get("schedule")), str(f.get("reason"))).inc(
                int(f.get("count", 1))
            )
        elif name.startswith("job.") and "to_state" in f:  # timers, operators, migrations
            self._moved(kind, f.get("from_state"), f["to_state"], name[len("job.") :])

    def _moved(self, kind: str, source: Any, dest: Any, trigger: str) -> None:
        self._child(self.transitions, kind, str(source), str(dest), trigger).inc()

    def _child(self, metric: Any, *labels: str) -> Any:
        """The metric's child for ``labels``, looked up once (``labels()`` takes a lock
        and builds a key on every call: a drain pays it per job)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            values = (self.chart_of(labels[0]), *labels) if metric is self.transitions else labels
            child = self._children[key] = metric.labels(*values)
        return child

    def refresh_gauges(
        self, counts: dict[tuple[str, str], int], oldest: dict[str, datetime], now: datetime
    ) -> None:
        """Publish jobs per kind and state and each kind's oldest due job."""
        self.jobs.clear()
        for (kind, state), n in counts.items():
            self.jobs.labels(kind, state).set(n)
        self.oldest_due.clear()
        for kind in {k for k, _ in counts} | set(oldest):
            due = oldest.get(kind)
            self.oldest_due.labels(kind).set(max((now - due).total_seconds(), 0.0) if due else 0)

    def clear_gauges(self) -> None:
        """Another worker publishes the database's figures: this one shows none."""
        self.jobs.clear()
        self.oldest_due.clear()

    def serve(self, port: int, address: str = "127.0.0.1") -> Any:
        """Serve /metrics on ``address:port`` (localhost unless asked) in a thread."""
        return prometheus().start_http_server(port, addr=address, registry=self.registry)


GAUGE_LOCK = 0x6A6F6267  # "jobg": the one worker that publishes the database's figures


class GaugePublisher:
    """Reads the gauges' figures from the database for one worker at a time.

    On PostgreSQL the publisher holds a session advisory lock on a connection of its own:
    the first worker to take it publishes, the others show no gauges, and when its process
    dies the lock goes with its connection and another worker takes over. On SQLite (one
    machine) every worker publishes.
    """

    def __init__(self, store: Store, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self._held: Any = None  # the connection holding the lock (PostgreSQL)

    def refresh(self, now: datetime) -> bool:
        """Publish the figures if this worker is the publisher; returns whether it is."""
        if not self._publisher():
            self.metrics.clear_gauges()
            return False
        self.metrics.refresh_gauges(
            self.store.job_count_by_kind_state(), self.store.job_oldest_due_by_kind(now), now
        )
        return True

    def _publisher(self) -> bool:
        if self.store.dialect != "postgresql":
            return True
        if self._held is not None:
            try:
                self._held.exec_driver_sql("SELECT 1")
                return True
            except Exception:  # the connection broke: the lock went with it
                self.close()
        conn = self.store.db.connect()
        # Keyed by schema too: two installs in one database (``?schema=``) each publish.
        taken = conn.exec_driver_sql(
            f"SELECT pg_try_advisory_lock({GAUGE_LOCK}, hashtext(current_schema()))"
        ).scalar()
        conn.commit()
        if taken:
            self._held = conn
            return True
        conn.close()
        return False

    def close(self) -> None:
        if self._held is not None:
            with contextlib.suppress(Exception):  # already broken: the lock went with it
                # Released now, not when the server notices the closed connection (a
                # worker taking over must not find it still held).
                self._held.exec_driver_sql(
                    f"SELECT pg_advisory_unlock({GAUGE_LOCK}, hashtext(current_schema()))"
                )
            with contextlib.suppress(Exception):
                self._held.invalidate()  # close the connection itself, lock and all
            self._held = None
