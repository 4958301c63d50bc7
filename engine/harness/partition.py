"""The partition harness: worker "hosts" in network namespaces; one is cut off mid-run.

    sudo python -m engine.harness.partition --db URL  # a PostgreSQL URL, as jobcharts --db takes

Each host is a Linux network namespace with a veth link to this one; a small TCP relay,
listening only on the private link addresses, carries its traffic to the PostgreSQL server.
Mid-run the link of host 0 is taken down (its traffic is dropped, its connections hang, as
in a real partition). Its leases expire on the server's clock, the other hosts rescue its
jobs, and when the link comes back its late completions are fenced out. The same checks as
the chaos harness follow: every job final, none lost, no duplicated keyed effect, valid
histories, bounded attempts; plus: the cut host's jobs were rescued, its late work fenced.

Needs root (``ip netns``) and the ``ip`` tool; creates and removes everything it uses.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from engine.engine import Engine
from engine.harness.chaos import ChaosReport, _check, _unfinished, fresh_database
from engine.harness.chaos_app import EFFECTS_ENV, effects_schema
from engine.store.connect import url_address, url_via

PREFIX = "jcpart"
SUBNET = "10.231"


@dataclass
class PartitionReport(ChaosReport):
    """The chaos checks, plus what the cut did."""

    cut_seconds: float = 0.0
    rescued_during_cut: int = 0
    fenced_on_cut_host: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        head = super().summary().replace("chaos on", "partition on", 1)
        return (
            f"{head}\ncut host 0 off for {self.cut_seconds:.1f}s: other hosts rescued "
            f"{self.rescued_during_cut} of its attempts; {self.fenced_on_cut_host} late "
            "results of the cut host were fenced out"
        )


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)  # noqa: S603 - fixed commands


class Network:
    """Namespaces ``jcpart0..n`` linked to this namespace by veth pairs."""

    def __init__(self, hosts: int) -> None:
        self.hosts = hosts

    def up(self) -> None:
        self.down()
        for i in range(self.hosts):
            ns, outer, inner = f"{PREFIX}{i}", f"{PREFIX}o{i}", f"{PREFIX}i{i}"
            _sh("ip", "netns", "add", ns)
            _sh("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
            _sh("ip", "link", "set", inner, "netns", ns)
            _sh("ip", "addr", "add", f"{SUBNET}.{i}.1/24", "dev", outer)
            _sh("ip", "link", "set", outer, "up")
            _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{SUBNET}.{i}.2/24", "dev", inner)
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", inner, "up")
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def cut(self, host: int) -> None:
        _sh("ip", "link", "set", f"{PREFIX}o{host}", "down")

    def heal(self, host: int) -> None:
        _sh("ip", "link", "set", f"{PREFIX}o{host}", "up")

    def down(self) -> None:
        for i in range(self.hosts):
            with contextlib.suppress(subprocess.CalledProcessError):
                _sh("ip", "netns", "del", f"{PREFIX}{i}")  # takes its veth pair with it
            with contextlib.suppress(subprocess.CalledProcessError):
                _sh("ip", "link", "del", f"{PREFIX}o{i}")


class Relay:
    """TCP relays on the link addresses to the database server, in a thread of their own."""

    def __init__(self, listen: list[str], port: int, target: tuple[str, int]) -> None:
        self.listen, self.port, self.target = listen, port, target
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="jcpart-relay", daemon=True)

    def start(self) -> Relay:
        self.thread.start()
        if not self.ready.wait(10):
            raise RuntimeError("the relay did not start")
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        for address in self.listen:
            self.loop.run_until_complete(asyncio.start_server(self._pipe, address, self.port))
        self.ready.set()
        self.loop.run_forever()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(ConnectionError, OSError):
                dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))


def run(
    *,
    db: str,
    directory: Path,
    hosts: int = 3,
    jobs_count: int = 600,
    lease: float = 2.0,
    cut_after: float = 3.0,
    cut_for: float = 8.0,
    concurrency: int = 2,
    settle_timeout: float = 180.0,
) -> PartitionReport:
    """Run one partition experiment against the PostgreSQL ``db`` and check its outcome."""
    directory.mkdir(parents=True, exist_ok=True)
    effects_path = directory / "effects.db"
    effects_path.unlink(missing_ok=True)
    with sqlite3.connect(effects_path) as conn:
        effects_schema(conn)
    url = fresh_database(db)
    server_host, server_port = url_address(db)
    os.environ[EFFECTS_ENV] = str(effects_path)
    from engine.harness import chaos_app

    chaos_app.engine.bind(url)
    chaos_app.engine.enqueue_many("transfer", [{"n": n} for n in range(jobs_count)])

    network = Network(hosts)
    network.up()
    relay = Relay(
        [f"{SUBNET}.{i}.1" for i in range(hosts)],
        5432,
        (server_host or "127.0.0.1", server_port or 5432),
    ).start()
    # A transaction left open by a cut-off host would hold its row locks until TCP gives up
    # (many minutes): the server ends such sessions after a few seconds instead.
    timeout_ms = int(lease * 2000)
    env = {**os.environ, EFFECTS_ENV: str(effects_path), "JOBCHARTS_CHAOS_LEASE": str(lease)}
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[IO[bytes]] = []
    report = PartitionReport(backend="postgresql", jobs=jobs_count, workers=hosts)
    started = time.monotonic()
    try:
        for i in range(hosts):
            host_url = url_via(
                url, f"{SUBNET}.{i}.1", 5432, f"-cidle_in_transaction_session_timeout={timeout_ms}"
            )
            command = [
                "ip", "netns", "exec", f"{PREFIX}{i}",
                sys.executable, "-m", "engine.cli", "--log-level", "info", "--log-format", "json",
                "worker", "--app", "engine.harness.chaos_app:engine",
                "--db", host_url,
                "--concurrency", str(concurrency), "--lease", str(lease), "--poll", "0.2",
                "--grace", "3",
            ]  # fmt: skip
            log: IO[bytes] = open(directory / f"host-{i}.log", "wb")  # noqa: SIM115
            logs.append(log)
            procs.append(subprocess.Popen(command, env=env, stdout=log, stderr=log))  # noqa: S603
        time.sleep(cut_after)
        # Cut while host 0 holds running jobs: a cut that lands between its claims (or
        # inside one, which the server then rolls back) would leave nothing to rescue.
        host0 = f"{socket.gethostname()}:{procs[0].pid}"  # `ip netns exec` execs in place
        deadline = time.monotonic() + 30  # workers starting on a busy machine take a while
        while not _holding(chaos_app.engine, host0) and time.monotonic() < deadline:
            time.sleep(0.02)
        before = _rescues(chaos_app.engine)
        network.cut(0)
        cut_at = time.monotonic()
        time.sleep(cut_for)
        report.rescued_during_cut = _rescues(chaos_app.engine) - before
        network.heal(0)
        report.cut_seconds = time.monotonic() - cut_at
        deadline = time.monotonic() + settle_timeout
        while _unfinished(chaos_app.engine, "transfer") and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(lease)  # let the healed host reach the server and be fenced
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
        relay.stop()
        network.down()
    report.seconds = time.monotonic() - started
    report.kills = 0
    _check(report, chaos_app.engine, effects_path, jobs_count, "transfer")
    report.fenced_on_cut_host = _fenced(directory / "host-0.log")
    if report.rescued_during_cut == 0:
        report.problems.append("no attempt of the cut host was rescued during the cut")
    chaos_app.engine.close()
    return report


def _rescues(engine: Engine) -> int:
    """How many attempts have been rescued (expired or released) so far."""
    return engine.store.audit_event_count(["expire", "release"])


def _holding(engine: Engine, worker: str) -> int:
    """How many jobs are running under a claim made by ``worker``."""
    return engine.store.audit_holding(worker, state="running", trigger="start")


def _fenced(log: Path) -> int:
    """Late results the cut host saw refused: fenced outcomes and fenced step records."""
    count = 0
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if event.get("event") in ("attempt.fenced_out", "attempt.fenced", "attempt.lease_lost"):
                count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--db", required=True, help="a PostgreSQL URL")
    parser.add_argument("--dir", type=Path, default=Path("partition-run"))
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--cut-after", type=float, default=3.0)
    parser.add_argument("--cut-for", type=float, default=8.0)
    args = parser.parse_args(argv)
    report = run(
        db=args.db,
        directory=args.dir,
        hosts=args.hosts,
        jobs_count=args.jobs,
        lease=args.lease,
        cut_after=args.cut_after,
        cut_for=args.cut_for,
    )
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
