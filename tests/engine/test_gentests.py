"""The generated tests: `jobcharts gen-tests` writes files that drive the real engine along
paths covering every transition, and those files catch a deliberately broken engine."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from docs.examples.payout import PAYOUT
from engine.cli import cli
from statecharts import lifecycle
from statecharts.testing import covering_paths, declared_edges, uncovered
from tests.conftest import logging_restored

ROOT = Path(__file__).resolve().parents[2]
APP = "docs.examples.payout:engine"


def run_pytest(directory: Path, mutation: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHARTS_")}
    env.update(PYTHONPATH=str(ROOT), JOBCHARTS_MUTATION=mutation)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    command += ["-p", "tests.engine.mutant_plugin", str(directory)]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    with logging_restored():  # a module fixture: outside each test's own restore
        result = CliRunner().invoke(cli, ["gen-tests", "--app", APP, "--out", str(out), "payout"])
    assert result.exit_code == 0, result.output
    return out


def test_the_paths_of_the_payout_cover_every_transition() -> None:
    paths = covering_paths(PAYOUT)
    assert uncovered(PAYOUT, paths) == set()
    assert len(declared_edges(PAYOUT)) == 45 and len(paths) == 31
    assert covering_paths(PAYOUT) == paths  # deterministic: files can be committed


def test_generated_files_pass_against_the_engine(generated: Path) -> None:
    files = sorted(p.name for p in generated.glob("*.py"))
    assert files == ["test_chart_payout.py"]
    text = (generated / "test_chart_payout.py").read_text()
    assert text.count('["enqueue", None, "pending"]') == 31
    result = run_pytest(generated)
    assert result.returncode == 0, result.stdout + result.stderr
    # 31 paths, the coverage check, the migrations check (none declared: one skipped)
    assert "33 passed, 1 skipped" in result.stdout


@pytest.mark.parametrize(
    ("mutation", "at_least"),
    [("fail_is_permanent", 6), ("deadline_ignored", 1), ("release_counts", 4)],
)
def test_generated_files_catch_a_broken_engine(
    generated: Path, mutation: str, at_least: int
) -> None:
    """Each deliberately broken transition makes some generated tests fail, and the
    failure shows where the persisted history left the path."""
    result = run_pytest(generated, mutation)
    assert result.returncode == 1, result.stdout + result.stderr
    failed = int(re.findall(r"(\d+) failed", result.stdout)[-1])
    assert failed >= at_least, result.stdout[-2000:]
    assert "the persisted history is not the path" in result.stdout


def test_stale_generated_tests_fail_their_coverage_check(generated: Path, tmp_path: Path) -> None:
    """A chart that gained a transition its generated tests do not take is reported."""
    text = (generated / "test_chart_payout.py").read_text()
    stale = tmp_path / "test_stale.py"
    cut = text.index("PATHS = [") + len("PATHS = [")
    end = text.index("\n    ],\n", cut) + len("\n    ],")
    stale.write_text(text[:cut] + text[end:])  # drop the first path
    result = run_pytest(tmp_path)
    assert result.returncode == 1
    assert "transitions no generated test takes (regenerate)" in result.stdout


def test_lifecycle_paths_replay_too(tmp_path: Path) -> None:
    """The built-in lifecycle's generated tests pass against the engine as well."""
    args = ["gen-tests", "--app", APP, "--out", str(tmp_path), "lifecycle"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.glob("*.py")) == ["test_chart_lifecycle.py"]
    paths = covering_paths(lifecycle())
    assert uncovered(lifecycle(), paths) == set()
    run = run_pytest(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{len(paths) + 2} passed, 1 skipped" in run.stdout


def test_generated_files_replay_each_declared_migration(tmp_path: Path) -> None:
    """A chart with migrations gets one test per migration (a job of an older version
    left in the old state is moved where it says), and they catch an engine that moves it
    elsewhere."""
    app = "tests.engine.deploys.deploy_app:v2"
    with logging_restored():
        result = CliRunner().invoke(cli, ["gen-tests", "--app", app, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    run = run_pytest(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("test_engine_migrates_older_jobs") == 0  # -q: counts only
    broken = run_pytest(tmp_path, "migration_to_first")
    assert broken.returncode == 1
    assert int(re.findall(r"(\d+) failed", broken.stdout)[-1]) == 3, broken.stdout[-2000:]


def test_generated_files_drive_async_handlers_for_an_async_app(tmp_path: Path) -> None:
    """An app whose handlers are async def gets generated tests whose scripted handlers
    are async too: every covering path runs through the worker's event loop."""
    app = "tests.engine.async_app:engine"
    with logging_restored():
        result = CliRunner().invoke(cli, ["gen-tests", "--app", app, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "test_chart_settle.py").read_text()
    assert "ASYNC = True" in text
    run = run_pytest(tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert " passed" in run.stdout and "failed" not in run.stdout
