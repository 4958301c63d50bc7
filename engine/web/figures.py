"""What the dashboard's overview shows, read with bounded queries (``engine.store.dashboard``)
and kept for a moment so the page, its panel and its diagrams share one read.

Per chart of the app: jobs per state (each count capped), the oldest job's age per state,
transitions per edge over a window (counted over the latest events), drawn as the chart's
live overlay. The whole-database figures of ``jobcharts stats`` take a full scan at a
million jobs, so ``StatsCache`` computes them in a background thread and the page shows
the latest result with its age.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from engine.store import dashboard as reads
from engine.timetable import seconds_text
from statecharts import Chart
from statecharts.render import Overlay

if TYPE_CHECKING:
    from engine.engine import Engine
    from engine.stats import Stats

COUNT_CAP = 10_000  # jobs counted per (kind, state); beyond, "10,000+"
EVENT_CAP = 20_000  # latest events the transitions per edge are counted over
FRESH = 1.0  # seconds an overview read is reused (the page, its panel and its diagrams)


@dataclass(frozen=True)
class StateRow:
    """One state of a chart: its jobs (``capped``: at least that many) and the age of
    the one that has been there longest."""

    state: str
    kind: str  # the state's kind: initial, work, wait, final
    jobs: int
    capped: bool
    oldest: timedelta | None
    success: bool | None  # final states: success or not


@dataclass(frozen=True)
class ChartFigures:
    """One chart's live figures: its rows, and the overlay its diagram draws."""

    chart: Chart
    kinds: tuple[str, ...]
    rows: tuple[StateRow, ...]
    overlay: Overlay
    transitions: int  # counted in the window (of the latest events)

    @property
    def unfinished(self) -> int:
        return sum(r.jobs for r in self.rows if r.kind != "final")


@dataclass(frozen=True)
class Overview:
    """Every chart's figures at ``now``, over ``window``."""

    now: datetime
    window: timedelta
    charts: tuple[ChartFigures, ...]
    truncated: bool  # the window held more than EVENT_CAP events: counts are of the latest
    took: float  # seconds the read took

    def chart(self, name: str) -> ChartFigures | None:
        return next((c for c in self.charts if c.chart.name == name), None)

    @property
    def window_text(self) -> str:
        text = f"transitions in the last {seconds_text(self.window)}"
        return text + (f" (the latest {EVENT_CAP:,} counted)" if self.truncated else "")


def read_overview(engine: Engine, window: timedelta) -> Overview:
    """The overview of every chart the app registers, from bounded reads."""
    started = time.perf_counter()
    now = engine.now()
    by_chart: dict[str, list[str]] = defaultdict(list)
    charts: dict[str, Chart] = {}
    for spec in engine.registry.specs:
        by_chart[spec.chart.name].append(spec.kind)
        charts[spec.chart.name] = spec.chart
    pairs = [
        (kind, s.name, not s.is_final)
        for name, kinds in by_chart.items()
        for kind in kinds
        for s in charts[name].states
    ]
    figures = reads.state_figures(engine.store, pairs, cap=COUNT_CAP)
    edges = reads.edge_counts(engine.store, now - window, cap=EVENT_CAP)
    chart_of_kind = {kind: name for name, kinds in by_chart.items() for kind in kinds}
    jobs: dict[str, Counter[str]] = defaultdict(Counter)
    capped: dict[str, set[str]] = defaultdict(set)
    oldest: dict[str, dict[str, datetime]] = defaultdict(dict)
    for f in figures:
        name = chart_of_kind[f.kind]
        jobs[name][f.state] += f.jobs
        if f.capped:
            capped[name].add(f.state)
        if f.oldest is not None:
            seen = oldest[name].get(f.state)
            oldest[name][f.state] = f.oldest if seen is None else min(seen, f.oldest)
    taken: dict[str, Counter[tuple[str, str, str]]] = defaultdict(Counter)
    for e in edges.edges:
        if e.kind in chart_of_kind:
            taken[chart_of_kind[e.kind]][(e.trigger, e.source, e.dest)] += e.taken
    result = []
    for name, chart in charts.items():
        ages = {s: now - at for s, at in oldest[name].items()}
        overlay = Overlay(
            jobs=dict(jobs[name]),
            oldest=ages,
            taken=dict(taken[name]),
            window=window,
            capped=frozenset(capped[name]),
        )
        rows = tuple(
            StateRow(
                s.name,
                s.kind.value,
                jobs[name][s.name],
                s.name in capped[name],
                ages.get(s.name),
                s.success if s.is_final else None,
            )
            for s in chart.states
        )
        count = sum(taken[name].values())
        result.append(ChartFigures(chart, tuple(by_chart[name]), rows, overlay, count))
    took = time.perf_counter() - started
    return Overview(now, window, tuple(result), edges.truncated, took)


@dataclass
class OverviewCache:
    """The latest overview per window, reused for ``FRESH`` seconds: one read serves the
    panel and every diagram of one refresh."""

    engine: Engine
    fresh: float = FRESH
    _kept: dict[float, tuple[float, Overview]] = field(default_factory=dict)
    _locks: dict[float, threading.Lock] = field(default_factory=dict)
    _svgs: dict[tuple[int, str], bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, window: timedelta) -> Overview:
        """The overview of ``window``: the kept one while fresh, else one read (requests
        for the same window wait for that read; other windows do not)."""
        key = window.total_seconds()
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            kept = self._kept.get(key)
            if kept is not None and time.monotonic() - kept[0] < self.fresh:
                return kept[1]
            overview = read_overview(self.engine, window)
            self._kept[key] = (time.monotonic(), overview)
            return overview

    def svg(self, overview: Overview, chart: str, draw: Callable[[], bytes]) -> bytes:
        """A chart's diagram for one overview read, drawn once (Graphviz costs tens of
        milliseconds: every open tab's refresh would pay it)."""
        key = (id(overview), chart)
        with self._lock:
            if key in self._svgs:
                return self._svgs[key]
        drawn = draw()
        with self._lock:
            live = {id(o) for _, o in self._kept.values()}
            self._svgs = {k: v for k, v in self._svgs.items() if k[0] in live}
            self._svgs[key] = drawn
        return drawn


@dataclass
class StatsCache:
    """``engine.stats.stats`` computed in a background thread, at most one at a time and
    at most every ``every`` seconds, only while someone looks (``latest`` asks for a
    fresh one when the kept one is older). A page never waits for it."""

    compute: Callable[[], Stats]
    every: float = 10.0
    _result: Stats | None = None
    _error: str | None = None
    _at: float = 0.0
    _took: float = 0.0
    _running: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    _tried: float = 0.0  # when the last computation ended, failed or not

    def latest(self) -> tuple[Stats | None, float | None, float, str | None]:
        """The kept stats, their age in seconds (None: none yet), how long they took and
        the last error; starts a refresh in the background when due."""
        with self._lock:
            due = not self._running and time.monotonic() - self._tried >= self.every
            if due:
                self._running = True
            result, at, took, error = self._result, self._at, self._took, self._error
        if due:
            threading.Thread(target=self._refresh, name="jobcharts-stats", daemon=True).start()
        age = time.monotonic() - at if result is not None else None
        return result, age, took, error

    def _refresh(self) -> None:
        started = time.perf_counter()
        try:
            result = self.compute()
            error = None
        except Exception as failure:  # shown on the page; the next look tries again
            result, error = None, f"{type(failure).__name__}: {failure}"
        with self._lock:
            if result is not None:  # (a failure keeps the last result, and its age)
                self._result = result
                self._at = time.monotonic()
                self._took = time.perf_counter() - started
            self._error = error
            self._tried = time.monotonic()
            self._running = False
