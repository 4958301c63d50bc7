"""One pass of the engine: services (rescue, schedules) -> claim -> start -> run -> commit.

``Engine.tick`` runs a whole pass in the caller's thread (tests and scripts); the worker
takes the same steps from its loop (``claim_due`` then ``mark_started``), running handlers on its
threads and committing as they finish.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from datetime import datetime

from engine.attempt import run_attempt
from engine.claim import Batch, claim, mark_started
from engine.commit import commit
from engine.outcomes import Claimed, Outcome
from engine.report import TickReport
from engine.runtime import Runtime
from engine.services.rescue import Rescuer
from engine.services.schedules import Scheduler


def claim_due(
    rt: Runtime,
    scheduler: Scheduler,
    now: datetime,
    limit: int,
    queues: Sequence[str] | None = None,
    start: bool = False,
) -> Batch:
    """Due cron/poller slots become jobs, then up to ``limit`` due jobs are claimed
    (``start``: and recorded as started, see ``claim``)."""
    scheduler.run_once(now)
    return claim(rt, now, limit, queues=queues, start=start)


def run_pass(
    rt: Runtime,
    rescuer: Rescuer,
    scheduler: Scheduler,
    *,
    now: datetime | None,
    limit: int,
    executor: Executor | None = None,
    queues: Sequence[str] | None = None,
) -> TickReport:
    """One whole pass; ``now`` fixes the time of every step (tests drive time).

    Handlers run in waves: each wave is marked started (one statement) just before it
    runs, so a crash leaves the rest of the batch "claimed, never started".
    """
    report = rescuer.run_once(now or rt.now())
    if scheduler.schedules:  # due slots become jobs, claimed just below
        scheduler.run_once(now or rt.now())
    batch = claim(rt, now or rt.now(), limit, queues=queues)
    report.timed += batch.timed
    if not batch.jobs:
        return report
    clock: Callable[[], datetime] = (lambda: now) if now else rt.now
    store, telemetry = rt.store, rt.telemetry

    def run(claimed: Claimed) -> Outcome:
        return run_attempt(claimed, store, clock, telemetry)

    outcomes: list[Outcome] = []
    wave = max(rt.start_wave, 1)
    for first in range(0, len(batch.jobs), wave):
        started = mark_started(rt, batch, batch.jobs[first : first + wave], clock())
        outcomes += map(run, started) if executor is None else executor.map(run, started)
    committed = commit(rt, outcomes, now or rt.now())
    committed.claimed = len(batch.jobs)
    committed.fenced += len(batch.jobs) - len(outcomes)
    report.add(committed)
    return report
