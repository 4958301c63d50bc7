"""The public contract: the names ``engine`` exports, and the README's example as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import engine

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = [
    "Cancelled",
    "Clock",
    "Engine",
    "ErrorInfo",
    "EventView",
    "FrozenClock",
    "IdempotencyRequired",
    "Invariant",
    "JobContext",
    "JobNotFound",
    "JobView",
    "JobchartsError",
    "LeaseLost",
    "Limit",
    "NoPayload",
    "NoRetry",
    "OffsetClock",
    "PayloadTooLarge",
    "Permanent",
    "Rate",
    "RegistrationError",
    "ResultTooLarge",
    "RetryPolicy",
    "StepHandler",
    "StepResultError",
    "SystemClock",
    "TickReport",
    "TransitionNotAllowed",
    "UnknownJobKind",
    "Worker",
    "backoff",
]


def test_the_public_names_are_pinned() -> None:
    """Removing or renaming an exported name breaks users: it must fail here first."""
    assert sorted(engine.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(engine, name) is not None


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    """The README's example, run as a script: it prints that the job succeeded."""
    readme = (ROOT / "README.md").read_text()
    example = re.search(r"## Example\s+```python\n(.*?)```", readme, re.S)
    assert example is not None, "README.md has an Example section with a python block"
    script = tmp_path / "example.py"
    script.write_text(example.group(1))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "sending to a@b.c" in done.stdout
    assert done.stdout.strip().splitlines()[-1] == "succeeded"
    assert (tmp_path / "jobs.db").exists()
