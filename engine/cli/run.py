"""Commands that run things: ``worker``, ``demo``, ``bench``."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import click
from click.core import ParameterSource

from engine.cli.common import (
    SECOND_SIGNAL_AFTER,
    app_option,
    cli,
    db_option,
    open_engine,
    outcome_text,
    table,
)
from engine.engine import Engine
from engine.logs import configure_logging
from engine.metrics import Metrics, prometheus
from engine.worker import DEFAULT_THREADS, Worker


@cli.command()
@app_option(required=True)
@db_option
@click.option(
    "--concurrency",
    "-c",
    default=None,
    type=click.IntRange(min=1),
    help=f"Handlers run at once per process: threads (default {DEFAULT_THREADS}), or child "
    "processes with --isolation process (default: one per CPU).",
)
@click.option(
    "--processes",
    "-p",
    default=1,
    type=click.IntRange(min=1),
    help="Worker processes sharing the database, run by a supervisor that restarts one "
    "that crashes or hangs (even -p 1; without this option the worker runs in this process).",
)
@click.option(
    "--watchdog",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="With --processes: kill and restart a worker whose loop has not come round for "
    "this many seconds (a handler holding the GIL freezes it); 0: never.",
)
@click.option("--poll", default=1.0, show_default=True, help="Longest idle sleep, seconds.")
@click.option("--batch", default=None, type=int, help="Jobs claimed per tick.")
@click.option("--max-ticks", default=None, type=int, help="Stop after this many claim attempts.")
@click.option(
    "--until-idle",
    is_flag=True,
    help="Exit once nothing runs and nothing is due within 5 s (a retry's backoff, a rescued "
    "job's).",
)
@click.option(
    "--grace", default=30.0, show_default=True, help="Seconds running handlers get on SIGTERM."
)
@click.option(
    "--lease", default=None, type=float, help="Lease length in seconds (renewed by heartbeat)."
)
@click.option(
    "--isolation",
    type=click.Choice(["thread", "process"]),
    default="thread",
    show_default=True,
    help="Run handlers in threads, or in child processes that a timeout can kill.",
)
@click.option("--queues", default=None, help="Claim only jobs of these queues (a,b,...).")
@click.option("--heartbeat-file", default=None, hidden=True, help="Set by the supervisor.")
@click.option(
    "--metrics-port",
    type=click.IntRange(min=1, max=65535),
    default=None,
    help="Serve Prometheus metrics on this port (jobcharts[metrics]); with --processes, the "
    "supervisor serves one view of all its workers.",
)
@click.option(
    "--metrics-address",
    default="127.0.0.1",
    show_default=True,
    help="Where --metrics-port listens (only localhost unless you say otherwise).",
)
@click.option("--metrics-child", is_flag=True, hidden=True, help="Set by the supervisor.")
def worker(
    app: str,
    db: str | None,
    concurrency: int | None,
    processes: int,
    watchdog: float,
    poll: float,
    batch: int | None,
    max_ticks: int | None,
    until_idle: bool,
    grace: float,
    lease: float | None,
    isolation: str,
    queues: str | None,
    heartbeat_file: str | None,
    metrics_port: int | None,
    metrics_address: str,
    metrics_child: bool,
) -> None:
    """Run jobs until SIGINT/SIGTERM: running handlers finish (within --grace) first."""
    queue_names = [q.strip() for q in queues.split(",") if q.strip()] if queues else None
    if concurrency is None:
        concurrency = DEFAULT_THREADS if isolation == "thread" else os.cpu_count() or 1
    ctx = click.get_current_context()
    root = ctx.find_root().params
    supervised = ctx.get_parameter_source("processes") is not ParameterSource.DEFAULT
    if not supervised and ctx.get_parameter_source("watchdog") is not ParameterSource.DEFAULT:
        raise click.UsageError("--watchdog needs --processes (the supervisor runs it)")
    if supervised:
        from engine.worker.supervisor import supervise

        child = ["--log-level", root["log_level"], "--log-format", root["log_format"], "worker"]
        child += ["--app", app, "--concurrency", str(concurrency), "--poll", str(poll)]
        child += ["--grace", str(grace), "--isolation", isolation]
        for flag, value in (
            ("--db", db),
            ("--batch", batch),
            ("--lease", lease),
            ("--queues", queues),
        ):
            if value is not None:
                child += [flag, str(value)]
        if max_ticks is not None:
            child += ["--max-ticks", str(max_ticks)]
        if until_idle:
            child.append("--until-idle")
        served = (metrics_address, metrics_port) if metrics_port is not None else None
        if served is not None:
            prometheus()  # the extra's one-line hint now, not in every child
        raise SystemExit(supervise(processes, child, watchdog=watchdog, metrics=served))
    engine = open_engine(app, db)
    if lease is not None:
        engine.lease_seconds = lease
    runner = Worker(
        engine,
        concurrency=concurrency,
        poll_interval=poll,
        batch_size=batch,
        grace=grace,
        isolation=isolation,
        app_spec=app,
        log_args=["--log-level", root["log_level"], "--log-format", root["log_format"]],
        queues=queue_names,
        heartbeat_file=heartbeat_file,
        metrics=_metrics(engine, metrics_port, metrics_address, metrics_child),
    )
    first_signal: list[float] = []

    def on_signal(signum: int, _frame: Any) -> None:
        # systemd signals every process of the service and the supervisor forwards too:
        # the same stop can arrive twice within moments, which is not a second request.
        now = time.monotonic()
        if first_signal and now - first_signal[0] > SECOND_SIGNAL_AFTER:
            click.echo("second signal: exiting now; unfinished leases will expire", err=True)
            os._exit(128 + signum)
        if not first_signal:
            first_signal.append(now)
            click.echo(
                "stopping after the running handlers finish (signal again to exit now)", err=True
            )
        runner.stop()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        totals = runner.run(max_ticks=max_ticks, until_idle=until_idle)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(
        f"worker stopped: claimed {totals.claimed}, succeeded {totals.succeeded}, "
        f"retried {totals.retried}, quarantined {totals.quarantined}"
    )


@cli.command()
@db_option
@click.option("--verbose", "-v", is_flag=True, help="Show every attempt's log events.")
def demo(db: str | None, verbose: bool) -> None:
    """A self-contained run on the embedded default: success, recovery, permanent, exhausted."""
    from engine import demo as demo_app

    if not verbose:
        configure_logging("error")
    engine = demo_app.build(db)
    click.echo(f"jobcharts demo on {engine.url}")
    started = time.monotonic()
    ids = demo_app.enqueue_batch(engine)
    totals = engine.drain(timeout=60.0)
    elapsed = time.monotonic() - started
    unique = list(dict.fromkeys(ids))
    views = [engine.get(i) for i in unique]
    click.echo(
        table(
            ["id", "kind", "state", "attempts", "why / result"],
            [
                [v.id, v.kind, v.state, f"{v.attempt}/{v.max_attempts}", outcome_text(v)]
                for v in views
            ],
        )
    )
    click.echo(
        f"{len(ids)} enqueues -> {len(unique)} jobs ({len(ids) - len(unique)} deduplicated); "
        f"{totals.claimed} attempts: {totals.succeeded} succeeded, {totals.retried} retried, "
        f"{totals.quarantined} quarantined, {totals.ended} compensated (a flow's own end), "
        f"in {elapsed:.2f}s"
    )
    worst = next((v for v in views if v.quarantine_reason == "exhausted"), None)
    if worst is not None:
        click.echo(f"\njobcharts inspect {worst.id}:")
        for question, answer in worst.explain(engine.chart_of(worst.chart), engine.now()).items():
            click.echo(f"  {question + '?':<17} {answer}")


@cli.command()
@click.option(
    "--db",
    default=None,
    help="A PostgreSQL URL: each run gets a new schema in its database (dropped after). "
    "Default: a fresh SQLite file per run.",
)
@click.option(
    "--only",
    default=None,
    help="Scenarios, comma-separated, of: enqueue, drain, processes, latency, statements, "
    "claim, async, observability. Default: all of them.",
)
@click.option("--jobs", "n_jobs", default=5_000, show_default=True, help="Jobs per run.")
@click.option("--repeat", default=3, show_default=True, help="Runs; the median is reported.")
@click.option(
    "--flags",
    default="--concurrency 64 --batch 1000",
    show_default=True,
    help="The `jobcharts worker` options of the second drain ('' to skip it).",
)
@click.option("--processes", default=2, show_default=True, help="Worker processes to scale to.")
@click.option(
    "--claim-rows",
    default="1000,100000",
    show_default=True,
    help="Table sizes of the claim scenario, e.g. 1000,1000000.",
)
def bench(
    db: str | None,
    only: str | None,
    n_jobs: int,
    repeat: int,
    flags: str,
    processes: int,
    claim_rows: str,
) -> None:
    """Measure the hot path: enqueue, drain, processes, latency, statements, claim cost."""
    from engine.harness import bench as bench_mod

    configure_logging("error")
    try:
        bench_mod.run_scenarios(
            db,
            bench_mod.SCENARIOS if only is None else [s.strip() for s in only.split(",")],
            jobs=n_jobs,
            repeat=repeat,
            flags=flags,
            processes=processes,
            claim_rows=[int(r) for r in claim_rows.split(",") if r.strip()],
            echo=click.echo,
        )
    except (ValueError, bench_mod.BenchFailure) as error:
        raise click.ClickException(str(error)) from error


def _metrics(engine: Engine, port: int | None, address: str, child: bool) -> Metrics | None:
    """The worker's metrics: served on ``port`` here, or written for the supervisor's view
    (``child``), or none."""
    if port is None and not child:
        return None
    metrics = Metrics(engine.registry)
    if port is not None:
        metrics.serve(port, address)
    return metrics
