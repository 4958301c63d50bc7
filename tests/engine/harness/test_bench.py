"""`jobcharts bench`: every scenario runs on both backends at a tiny size, reports figures,
and a run that loses or repeats work is caught, not reported."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
from click.testing import CliRunner

from engine.cli import cli
from engine.harness.bench_statements import _counting
from engine.harness.bench_worker import exactly_once_problems
from tests.conftest import pg_url


def test_every_scenario_reports_its_figures(backend: str, db_url: str) -> None:
    """(``db_url`` only to skip or fail PostgreSQL as the suite does; bench makes its own.)"""
    args = ["bench", "--jobs", "60", "--repeat", "1", "--claim-rows", "300"]
    args += ["--flags", "--concurrency 4"]
    if backend == "postgresql":
        args += ["--db", pg_url()]
    result = CliRunner().invoke(cli, args, env={"JOBCHARTS_DB": None})
    assert result.exit_code == 0, result.output + repr(result.exception)
    out = result.output
    figures = {
        "enqueue": r"enqueue\(\), one call per job: +([\d,]+) jobs/s  \(keyed: ([\d,]+)\)",
        "bulk": r"enqueue_many\(\), 1,000 per call: +([\d,]+) jobs/s  \(keyed: ([\d,]+)\)",
        "drain": r"drain, worker at its defaults: +([\d,]+) jobs/s",
        "flags": r"drain, worker --concurrency 4: ([\d,]+) jobs/s  \(x[\d.]+\)",
        "processes": r"drain, worker --processes 2: +([\d,]+) jobs/s  \(x[\d.]+ of one process\)",
        "latency": r"p50 ([\d.]+) ms, p99 ([\d.]+) ms",
        "statements": r"enqueue ([\d.]+) statements \(([\d.]+) round trips\); run ([\d.]+)",
        "claim": r"beside +300 rows: median ([\d.]+) ms",
        "async enqueue": r"await aenqueue\(\), one per job: +([\d,]+) jobs/s  \(10 tasks at "
        r"once: ([\d,]+)\)",
        "async bulk": r"await aenqueue_many\(\), 1,000: +([\d,]+) jobs/s",
        "async drain": r"drain, async def handlers: +([\d,]+) jobs/s  \(x[\d.]+ of sync\)",
        "metrics": r"drain, metrics served: +([\d,]+) jobs/s  \(x[\d.]+\)",
        "traces": r"drain, spans on \(OTel SDK\): +([\d,]+) jobs/s  \(x[\d.]+\)",
    }
    for name, pattern in figures.items():
        found = re.search(pattern, out)
        assert found, f"{name} missing from:\n{out}"
        assert all(float(g.replace(",", "")) > 0 for g in found.groups()), (name, out)
    assert "every run checked exactly-once" in out


def test_an_unknown_scenario_is_refused() -> None:
    result = CliRunner().invoke(cli, ["bench", "--only", "drain,warp"])
    assert result.exit_code != 0
    assert "unknown scenario(s) ['warp']" in result.output


def test_a_run_that_lost_or_repeated_work_is_caught() -> None:
    ids = [1, 2, 3, 4]
    assert exactly_once_problems({1: [0.0], 2: [0.1], 3: [0.2], 4: [0.3]}, ids) == []
    problems = exactly_once_problems({1: [0.0], 2: [0.1, 0.2], 3: [0.2], 9: [1.0]}, ids)
    assert problems == [
        "1 jobs never ran (first: [4])",
        "1 jobs ran more than once (first: [2])",
        "1 unknown job ids ran (first: [9])",
    ]


def test_counting_round_trips_stops_tracing_before_its_trace_file_closes(
    tmp_path: Path,
) -> None:
    """A connection opened while the statements are counted and closed after (a pool's)
    must not write libpq's trace into whatever file reuses the trace's descriptor number
    (it once wrote into the next test's fresh SQLite file: "file is not a database")."""
    url = pg_url()
    with _counting(url, tmp_path / "trace.txt"):
        other = sa.create_engine(url)
        with other.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    with (tmp_path / "victim").open("wb"):  # takes the freed descriptor number
        other.dispose()  # the pooled connection says goodbye to the server now
    assert (tmp_path / "victim").read_bytes() == b""
