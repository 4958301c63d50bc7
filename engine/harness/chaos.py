"""The chaos harness: worker processes drain jobs while a killer SIGKILLs them at random.

    python -m engine.harness.chaos --jobs 10000 --workers 4 --kills 50 --dir /tmp/chaos [--flow]

Each job performs a keyed side effect through ``ctx.step`` into a separate SQLite file
(see ``engine.harness.chaos_app``). A killer sends SIGKILL to a random worker at random moments
and restarts it. When the kills are done and every job is final, the harness checks and
prints: every job final, zero lost, zero duplicated keyed effects, every job's history a
valid path through its chart, attempts within bounds. Exit status 0 only if all hold.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from engine.engine import Engine
from engine.harness.chaos_app import EFFECTS_ENV, FLOW_EFFECTS, MAX_ATTEMPTS, effects_schema
from engine.store.connect import backend_name, pg_schema_create
from statecharts import Step, path_errors


@dataclass
class ChaosReport:
    """What a chaos run did and what it found."""

    backend: str = "sqlite"
    jobs: int = 0
    workers: int = 0
    kills: int = 0
    seconds: float = 0.0
    states: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    effects: int = 0
    duplicated_effects: int = 0
    missing_effects: int = 0
    executions: int = 0
    released: int = 0
    expired: int = 0
    invalid_paths: int = 0
    over_attempts: int = 0
    max_attempt: int = 0
    effects_per_job: int = 1
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        succeeded = self.states.get("succeeded", 0)
        lines = [
            f"chaos on {self.backend}: {self.jobs} jobs, {self.workers} worker processes, "
            f"{self.kills} SIGKILLs, "
            f"{self.seconds:.1f}s",
            f"final states: {dict(sorted(self.states.items()))}",
            f"lost jobs (missing or not final): {self.lost}",
            f"keyed effects: {self.effects} for {succeeded} succeeded jobs "
            f"({self.effects_per_job} each); "
            f"duplicated: {self.duplicated_effects}; missing: {self.missing_effects}",
            f"effect function calls: {self.executions} "
            f"({self.executions - self.effects} re-runs after a crash before the step record)",
            f"rescued attempts: {self.expired} expired (counted), {self.released} released "
            "(never started, not counted)",
            f"histories that are not a valid path: {self.invalid_paths}",
            f"attempts: max {self.max_attempt} of {MAX_ATTEMPTS} allowed; over the bound: "
            f"{self.over_attempts}",
            "RESULT: " + ("PASS" if self.ok else "FAIL: " + "; ".join(self.problems)),
        ]
        return "\n".join(lines)


def run(
    *,
    directory: Path,
    jobs_count: int,
    workers: int,
    kills: int,
    concurrency: int = 2,
    lease: float = 2.0,
    kill_interval: tuple[float, float] = (0.2, 1.0),
    settle_timeout: float = 300.0,
    seed: int | None = None,
    db: str | None = None,
    fresh: bool = True,
    kind: str = "transfer",
) -> ChaosReport:
    """Run one chaos experiment in ``directory`` and check its outcome.

    The jobs live in a fresh SQLite file in ``directory``, or, when ``db`` is a PostgreSQL
    URL, in a fresh schema of that database (``fresh=False``: ``db`` is empty already and
    is used as it is). The effects always go to a SQLite file.
    """
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    db_path, effects_path = directory / "jobs.db", directory / "effects.db"
    for path in directory.glob("*.db*"):
        path.unlink()
    url = (fresh_database(db) if fresh else db) if db else f"sqlite:///{db_path}"
    with sqlite3.connect(effects_path) as conn:
        effects_schema(conn)
    env = {
        **os.environ,
        EFFECTS_ENV: str(effects_path),
        "JOBCHARTS_CHAOS_LEASE": str(lease),
    }
    os.environ[EFFECTS_ENV] = str(effects_path)
    from engine.harness import chaos_app

    chaos_app.engine.bind(url)
    chaos_app.engine.enqueue_many(kind, [{"n": n} for n in range(jobs_count)])

    command = [
        sys.executable, "-m", "engine.cli", "--log-level", "warning", "--log-format", "json",
        "worker", "--app", "engine.harness.chaos_app:engine", "--db", url,
        "--concurrency", str(concurrency), "--lease", str(lease), "--poll", "0.2",
        "--grace", "5",
    ]  # fmt: skip
    logs: list[IO[bytes]] = []

    def spawn(index: int) -> subprocess.Popen[bytes]:
        log = open(directory / f"worker-{index}.log", "ab")  # noqa: SIM115 - closed at the end
        logs.append(log)
        return subprocess.Popen(command, env=env, stdout=log, stderr=log)  # noqa: S603

    report = ChaosReport(backend=backend_name(url), jobs=jobs_count, workers=workers)
    started = time.monotonic()
    procs = [spawn(i) for i in range(workers)]
    try:
        # Kill only once the workers run jobs: kills that all land while the workers are
        # still starting (a busy machine) would interrupt no attempt.
        deadline = time.monotonic() + 60
        while not chaos_app.engine.store.audit_event_count(["start"]):
            if time.monotonic() > deadline:
                report.problems.append("no worker started a job within 60 s")
                break
            time.sleep(0.05)
        while report.kills < kills:
            time.sleep(rng.uniform(*kill_interval))
            victim = rng.randrange(workers)
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            report.kills += 1
            procs[victim] = spawn(victim)
            if _unfinished(chaos_app.engine, kind) == 0:
                break  # everything is final already: later kills would test nothing
        deadline = time.monotonic() + settle_timeout
        while _unfinished(chaos_app.engine, kind) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        for log in logs:
            log.close()
    report.seconds = time.monotonic() - started
    _check(report, chaos_app.engine, effects_path, jobs_count, kind)
    chaos_app.engine.close()
    return report


def fresh_database(url: str) -> str:
    """A new, empty schema in the PostgreSQL database at ``url``; returns its URL."""
    if backend_name(url) != "postgresql":
        raise ValueError(f"--db takes a PostgreSQL URL (SQLite runs use --dir): {url}")
    return pg_schema_create(url, "chaos")


def _unfinished(engine: Engine, kind: str) -> int:
    return engine.store.job_count_unfinished([kind])


def _check(
    report: ChaosReport, engine: Engine, effects_path: Path, expected: int, kind: str
) -> None:
    rows = engine.store.audit_histories()
    report.states = dict(Counter(row.state for row in rows))
    report.lost = expected - sum(1 for row in rows if row.finished_at is not None)
    report.max_attempt = max((row.attempt for row in rows), default=0)
    report.over_attempts = sum(1 for row in rows if row.attempt > MAX_ATTEMPTS)
    paths: dict[int, list[Step]] = {}
    for row in rows:
        for event in row.steps:
            paths.setdefault(row.id, []).append(
                Step(event.trigger, event.from_state, event.to_state)
            )
            if event.trigger == "expire":
                report.expired += 1
            elif event.trigger == "release":
                report.released += 1
    chart = engine.registry.get(kind).chart
    per_job = report.effects_per_job = len(FLOW_EFFECTS) if kind == "settle" else 1
    report.invalid_paths = sum(1 for steps in paths.values() if path_errors(chart, steps))
    succeeded = {row.id for row in rows if row.state == "succeeded"}
    with sqlite3.connect(effects_path) as fx:
        report.effects = fx.execute("SELECT count(*) FROM effects").fetchone()[0]
        report.executions = fx.execute("SELECT count(*) FROM executions").fetchone()[0]
        applied = fx.execute("SELECT count(*) - count(DISTINCT key) FROM applied").fetchone()[0]
        per_job_found = Counter(row[0] for row in fx.execute("SELECT job_id FROM effects"))
    report.duplicated_effects = applied
    report.missing_effects = sum(1 for job in succeeded if per_job_found[job] != per_job)
    if len(rows) != expected:
        report.problems.append(f"{expected - len(rows)} job rows missing")
    if report.lost:
        report.problems.append(f"{report.lost} jobs not final")
    if report.duplicated_effects:
        report.problems.append(f"{report.duplicated_effects} duplicated keyed effects")
    if report.missing_effects:
        report.problems.append(f"{report.missing_effects} succeeded jobs without their effect")
    if report.invalid_paths:
        report.problems.append(f"{report.invalid_paths} histories are not valid paths")
    if report.over_attempts:
        report.problems.append(f"{report.over_attempts} jobs over max_attempts")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--dir", type=Path, default=Path("chaos-run"))
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--db", default=None, help="a PostgreSQL URL (default: SQLite in --dir)")
    parser.add_argument(
        "--flow", action="store_true", help="run the multi-step settle flow (two effects per job)"
    )
    parser.add_argument(
        "--async", dest="use_async", action="store_true", help="run async def handlers"
    )
    args = parser.parse_args(argv)
    report = run(
        directory=args.dir,
        jobs_count=args.jobs,
        workers=args.workers,
        kills=args.kills,
        concurrency=args.concurrency,
        lease=args.lease,
        seed=args.seed,
        db=args.db,
        kind="settle" if args.flow else "atransfer" if args.use_async else "transfer",
    )
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
