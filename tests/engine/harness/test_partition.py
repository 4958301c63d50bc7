"""A host cut off from PostgreSQL mid-run: others rescue its jobs, its late work is fenced."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine.harness.partition import run
from tests.conftest import pg_url


def test_a_partitioned_host_loses_its_leases_and_its_late_results(
    db_url: str, backend: str, tmp_path: Path
) -> None:
    """Three hosts in network namespaces; host 0 is cut for 6 s: nothing lost or doubled."""
    if backend != "postgresql":
        pytest.skip("hosts share a PostgreSQL server")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and the ip tool")
    url = pg_url()
    if "host=/" in url:
        pytest.skip("the hosts reach the server over TCP; the throwaway server has a socket")
    report = run(
        db=url,
        directory=tmp_path / "partition",
        hosts=3,
        jobs_count=500,
        lease=1.5,
        cut_after=0.0,  # cut at host 0's first running handler, while work remains
        cut_for=6.0,
    )
    print(report.summary())
    assert report.ok, report.summary()
    assert report.states == {"succeeded": 500}
    assert report.duplicated_effects == 0 and report.effects == 500
    assert report.rescued_during_cut >= 1, "the cut host's leases expired and were rescued"
    assert report.fenced_on_cut_host >= 1, "the healed host's late work was fenced out"
