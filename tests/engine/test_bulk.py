"""Listing jobs a page at a time and bulk operator actions (``jobcharts jobs``, ``requeue``,
``cancel``; ``engine.bulk``), on both backends: the CLI in process and the Python API.

The app is this module's ``the_app`` (a factory: ``--app tests.engine.test_bulk:the_app``)
returning the current test's engine, bound to the test's database and driven by a frozen
clock, so ages and times are exact.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result
from pydantic import BaseModel

from engine import Engine, FrozenClock, Invariant, JobContext, Permanent, RetryPolicy, bulk
from engine.bulk import JobFilter
from engine.cli import cli
from engine.store import EventRecord, JobRow
from engine.store import bulk as sql
from statecharts import Work, flow

APP = "tests.engine.test_bulk:the_app"
_current: list[Engine] = []


def the_app() -> Engine:
    """The ``--app`` of these tests: the engine of the test that is running."""
    return _current[0]


class Order(BaseModel):
    n: int


def build(db_url: str, clock: FrozenClock) -> Engine:
    """Kinds: ``ok`` succeeds, ``bad`` raises Permanent, ``fails`` is exhausted after one
    attempt, ``loose`` (queue "slow", no dedupe key) raises Permanent, ``short`` raises
    Permanent and its key lives 0 s, ``steps`` is a flow through state ``reserve``."""
    app = Engine(db_url, clock=clock, seed=7)

    @app.job(payload=Order, idempotency=lambda p: f"ok:{p.n}")
    def ok(ctx: JobContext, p: Order) -> None:
        return None

    @app.job(payload=Order, idempotency=lambda p: f"bad:{p.n}")
    def bad(ctx: JobContext, p: Order) -> None:
        raise Permanent(f"order {p.n} cannot ship")

    @app.job(
        payload=Order,
        idempotency=lambda p: f"fails:{p.n}",
        retry=RetryPolicy(max_attempts=1, base=0, jitter=0),
    )
    def fails(ctx: JobContext, p: Order) -> None:
        raise ConnectionError("upstream down")

    @app.job(payload=Order, idempotency=Invariant("tests count nothing"), queue="slow")
    def loose(ctx: JobContext, p: Order) -> None:
        raise Permanent("no")

    @app.job(payload=Order, idempotency=lambda p: f"short:{p.n}", idempotency_ttl=0)
    def short(ctx: JobContext, p: Order) -> None:
        raise Permanent("no")

    app.flow(
        "steps",
        flow("steps", Work("reserve", on={"ok": "succeeded"})),
        {"reserve": lambda ctx, p: "ok"},
        payload=Order,
        idempotency=lambda p: f"steps:{p.n}",
    )
    return app


@pytest.fixture
def app(db_url: str, clock: FrozenClock) -> Iterator[Engine]:
    engine = build(db_url, clock)
    _current[:] = [engine]
    yield engine
    _current.clear()
    engine.close()
    structlog.reset_defaults()  # the CLI group configured it onto CliRunner's stderr


@pytest.fixture
def reader(db_url: str) -> Iterator[Engine]:
    """A separate engine on the same database, to read what the commands stored."""
    engine = Engine(db_url)
    yield engine
    engine.close()


def run(db_url: str, *args: str, app: bool = True) -> Result:
    argv = [*args, "--db", db_url] + (["--app", APP] if app else [])
    return CliRunner().invoke(cli, argv)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.exit_code, result.output, result.exception)
    return result.stdout


def refused(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    return result.output


def listed(output: str) -> list[int]:
    """The ids in the first column of a table in ``output``."""
    return [int(m.group(1)) for m in re.finditer(r"^(\d+)\s", output, re.MULTILINE)]


def cursor(output: str) -> int | None:
    found = re.search(r"^next page: --after (\d+)$", output, re.MULTILINE)
    return int(found.group(1)) if found else None


def snapshot(engine: Engine) -> tuple[list[JobRow], dict[int, list[EventRecord]]]:
    """Every job row and every history, to compare before and after."""
    rows = sql.job_scan(engine.store, JobFilter(), limit=100_000)
    return rows, {r.id: engine.store.job_events(r.id) for r in rows}


def states(engine: Engine, ids: list[int]) -> dict[int, str]:
    return {i: engine.get(i).state for i in ids}


def every(jobs: dict[str, list[int]]) -> list[int]:
    return sorted(job for ids in jobs.values() for job in ids)


def make(app: Engine, kind: str, ns: range, **options: Any) -> list[int]:
    return [app.enqueue(kind, {"n": n}, **options) for n in ns]


@pytest.fixture
def mix(app: Engine, clock: FrozenClock) -> dict[str, list[int]]:
    """Jobs in several states: ``done`` (ok, succeeded), ``bad`` (quarantined permanent),
    ``exhausted`` (fails), ``loose`` (queue slow, quarantined) an hour old; ``fresh``
    (ok, pending) enqueued just now."""
    jobs = {
        "done": make(app, "ok", range(1, 4)),
        "bad": make(app, "bad", range(1, 6)),
        "exhausted": make(app, "fails", range(1, 3)),
        "loose": make(app, "loose", range(1, 3)),
    }
    app.run_until_idle()
    clock.advance(3600)
    jobs["fresh"] = make(app, "ok", range(10, 12))
    return jobs


# -- listing ---------------------------------------------------------------------------------


def test_jobs_filters_by_state_kind_queue_reason_and_age(
    db_url: str, app: Engine, mix: dict[str, list[int]]
) -> None:
    """Each filter narrows the listing; filters combine; newest first."""
    quarantined = mix["bad"] + mix["exhausted"] + mix["loose"]
    out = ok(run(db_url, "jobs", "--state", "quarantined"))
    assert listed(out) == sorted(quarantined, reverse=True)
    assert "quarantined: 9" in out and "succeeded: 3" in out and "pending: 2" in out
    both = ok(run(db_url, "jobs", "--state", "succeeded", "--state", "pending"))
    assert listed(both) == sorted(mix["done"] + mix["fresh"], reverse=True)
    assert listed(ok(run(db_url, "jobs", "--kind", "bad"))) == mix["bad"][::-1]
    assert listed(ok(run(db_url, "jobs", "--queue", "slow"))) == mix["loose"][::-1]
    assert listed(ok(run(db_url, "jobs", "--reason", "exhausted"))) == mix["exhausted"][::-1]
    permanent = ok(run(db_url, "jobs", "--reason", "permanent", "--kind", "loose"))
    assert listed(permanent) == mix["loose"][::-1]
    assert listed(ok(run(db_url, "jobs", "--newer-than", "30m"))) == mix["fresh"][::-1]
    old = ok(run(db_url, "jobs", "--older-than", "30m", "--kind", "ok"))
    assert listed(old) == mix["done"][::-1]
    assert listed(ok(run(db_url, "jobs", "--kind", "nothing"))) == []


def test_jobs_pages_walk_every_row_exactly_once(
    db_url: str, app: Engine, mix: dict[str, list[int]]
) -> None:
    """Following the printed cursor visits every job once, newest first; the last page
    prints no cursor (text and JSON alike, with and without a filter)."""
    everything = every(mix)[::-1]
    for extra in ([], ["--state", "quarantined"]):
        expected = [r.id for r in sql.job_page(app.store, _filter(extra), limit=1000)]
        seen: list[int] = []
        after: list[str] = []
        pages = 0
        while True:
            out = ok(run(db_url, "jobs", "--limit", "4", *extra, *after))
            page = listed(out)
            assert 1 <= len(page) <= 4
            seen += page
            pages += 1
            nxt = cursor(out)
            if nxt is None:
                break
            assert nxt == page[-1]
            after = ["--after", str(nxt)]
        assert seen == expected and len(set(seen)) == len(seen)
        assert pages == -(-len(expected) // 4)
        walked: list[int] = []
        document: dict[str, Any] = {"next_after": None}
        while True:
            more = ["--after", str(document["next_after"])] if document["next_after"] else []
            document = json.loads(ok(run(db_url, "jobs", "--json", "--limit", "5", *extra, *more)))
            walked += [row["id"] for row in document["jobs"]]
            if document["next_after"] is None:
                break
        assert walked == expected
    assert seen != everything  # (the filtered walk is the last one)
    exact = ok(run(db_url, "jobs", "--limit", str(len(everything))))
    assert listed(exact) == everything and cursor(exact) is None  # a full last page: no cursor


def _filter(extra: list[str]) -> JobFilter:
    return JobFilter(states=tuple(extra[1:])) if extra else JobFilter()


def test_jobs_json_is_one_document_with_the_rows_and_the_cursor(
    db_url: str, app: Engine, mix: dict[str, list[int]]
) -> None:
    document = json.loads(ok(run(db_url, "jobs", "--json", "--kind", "bad", "--limit", "2")))
    assert set(document) == {"jobs", "next_after", "counts"}
    assert [row["id"] for row in document["jobs"]] == mix["bad"][::-1][:2]
    assert document["next_after"] == mix["bad"][-2]
    row = document["jobs"][0]
    assert row["state"] == "quarantined" and row["kind"] == "bad"
    assert row["quarantine_reason"] == "permanent" and row["last_error_class"] == "Permanent"
    assert row["idempotency_key"] == f"bad:{len(mix['bad'])}"
    assert row["queue"] == "default" and row["attempt"] == 1
    assert row["updated_at"].startswith("2026-01-01T00:00:00")  # ISO 8601, the frozen clock
    assert document["counts"] == {"succeeded": 3, "quarantined": 9, "pending": 2}
    last = json.loads(ok(run(db_url, "jobs", "--json", "--kind", "loose")))
    assert last["next_after"] is None and len(last["jobs"]) == 2


def test_jobs_refuses_an_unknown_state_and_limits_out_of_range(
    db_url: str, app: Engine, mix: dict[str, list[int]]
) -> None:
    """An unknown state is a usage error naming the known ones (the app's charts': a flow's
    state is known with --app even while no job is in it); --limit is 1 to 1000."""
    out = refused(run(db_url, "jobs", "--state", "quarantine"), 2)
    assert "unknown state 'quarantine'" in out
    assert "quarantined" in out and "reserve" in out and "retry_wait" in out
    assert listed(ok(run(db_url, "jobs", "--state", "reserve"))) == []
    bare = refused(run(db_url, "jobs", "--state", "reserve", app=False), 2)
    assert "unknown state 'reserve'" in bare and "retry_wait" in bare  # the lifecycle's
    assert listed(ok(run(db_url, "jobs", "--state", "quarantined", app=False)))
    for limit in ("0", "-1", "1001", "many"):
        assert "--limit" in refused(run(db_url, "jobs", "--limit", limit), 2)
    assert "--after" in refused(run(db_url, "jobs", "--after", "0"), 2)
    assert "--older-than" in refused(run(db_url, "jobs", "--older-than", "soon"), 2)
    assert len(listed(ok(run(db_url, "jobs", "--limit", "1000")))) == 14


# -- bulk actions: the CLI ------------------------------------------------------------------


def test_requeue_by_filter_is_a_dry_run_that_changes_nothing(
    db_url: str, app: Engine, reader: Engine, mix: dict[str, list[int]]
) -> None:
    before = snapshot(reader)
    out = ok(run(db_url, "requeue", "--state", "quarantined", "--show", "4"))
    assert "would requeue 9 job(s) matching state=quarantined (quarantined 9)" in out
    quarantined = sorted(mix["bad"] + mix["exhausted"] + mix["loose"])
    assert listed(out) == quarantined[:4]  # the first ones, in the order it takes them
    assert "-> pending" in out and "the first 4 of 9 shown" in out
    assert "run again with --yes" in out
    named = ok(run(db_url, "cancel", str(mix["fresh"][0]), "--dry-run"))
    assert listed(named) == [mix["fresh"][0]] and "-> cancelled" in named
    done = mix["done"][0]
    out = refused(run(db_url, "requeue", str(done), "404", "--dry-run"), 1)
    assert "no job with id 404" in out and "skip: it is 'succeeded'" in out
    assert "2 of 2 job(s) would not be requeued" in out
    assert snapshot(reader) == before


def test_requeue_yes_changes_exactly_the_listed_jobs_and_skips_the_others(
    db_url: str, app: Engine, reader: Engine, mix: dict[str, list[int]]
) -> None:
    """--yes requeues what the dry run listed, three jobs per transaction; jobs the
    filter matched that cannot be requeued are skipped with the reason; nothing else
    changes; each history records the operator, the run and the filter."""
    selection = ["--kind", "bad", "--kind", "ok", "--before", "30m"]
    listing = ok(run(db_url, "requeue", *selection, "--show", "100"))
    assert sorted(listed(listing)) == sorted(mix["bad"] + mix["done"])
    would = {int(line.split()[0]) for line in listing.splitlines() if "-> pending" in line}
    assert would == set(mix["bad"])
    before_rows, before_events = snapshot(reader)

    out = ok(run(db_url, "requeue", *selection, "--yes", "--batch-size", "3"))
    run_id = re.search(r"run (\w+): 8 job\(s\) matched, 3 batch\(es\)", out)
    assert run_id, out
    assert "requeued 5 job(s); skipped 3" in out
    assert re.search(r"not_applicable\s+3", out)
    for job in mix["done"]:
        assert re.search(rf"^{job}\s+succeeded\s+it is 'succeeded'; requeue applies", out, re.M)

    after_rows, after_events = snapshot(reader)
    changed = {b.id for b, a in zip(before_rows, after_rows, strict=True) if a != b} | {
        i for i in after_events if after_events[i] != before_events[i]
    }
    assert changed == would
    for job in mix["bad"]:
        view = reader.get(job)
        assert (view.state, view.attempt, view.quarantine_reason) == ("pending", 0, None)
        last = view.history[-1]
        assert (last.from_state, last.to_state) == ("quarantined", "pending")
        assert last.trigger == "requeue"
        assert last.detail == {
            "by": "operator",
            "bulk": run_id.group(1),
            "filter": "kind=bad,ok updated<2026-01-01T00:30:00+00:00",
        }
        assert len(view.history) == len(before_events[job]) + 1
    app.run_until_idle()  # the fresh runs fail again
    assert set(states(reader, mix["bad"]).values()) == {"quarantined"}


def test_requeue_and_cancel_by_ids_apply_at_once_and_report_each_job(
    db_url: str, app: Engine, reader: Engine, mix: dict[str, list[int]]
) -> None:
    """Named jobs are acted on at once; one that is missing or cannot take the action is
    reported and the command exits 1 after doing the rest."""
    first, second = mix["bad"][:2]
    done = mix["done"][0]
    result = run(db_url, "requeue", str(first), str(done), "999", str(second))
    out = refused(result, 1)
    assert f"job {first} requeued" in result.stdout and f"job {second} requeued" in result.stdout
    assert f"job {done} not requeued: it is 'succeeded'" in out
    assert "job 999 not requeued: no job with id 999" in out
    assert "2 of 4 job(s) not requeued" in out
    assert states(reader, [first, second, done]) == {
        first: "pending",
        second: "pending",
        done: "succeeded",
    }
    assert (reader.get(first).history[-1].detail or {})["by"] == "operator"

    again = refused(run(db_url, "requeue", str(first)), 1)
    assert f"cannot requeue job {first}: it is 'pending'" in again
    assert "no job with id 999" in refused(run(db_url, "cancel", "999"), 1)

    fresh = mix["fresh"]
    out = ok(run(db_url, "cancel", *map(str, fresh)))
    assert all(f"job {job} cancelled" in out for job in fresh)
    assert "cancelled 2 job(s)" in out
    assert set(states(reader, fresh).values()) == {"cancelled"}


def test_cancel_by_filter_cancels_waiting_jobs_and_asks_held_ones_to_stop(
    db_url: str, app: Engine, reader: Engine
) -> None:
    """The cancel rule holds in bulk: jobs no handler holds are cancelled; jobs a worker
    holds get a request (their handler stops at its next step), as ``cancel ID`` does."""
    waiting = make(app, "ok", range(1, 6))
    held = make(app, "ok", range(6, 9), queue="held")
    batch = app.claim(app.now(), 10, queues=["held"])
    assert sorted(c.job_id for c in batch.jobs) == held
    before = {job: reader.store.job_get(job) for job in held}
    assert all(row is not None for row in before.values())

    out = ok(run(db_url, "cancel", "--kind", "ok", "--yes", "--batch-size", "2"))
    assert "cancelled 5 job(s)" in out
    assert "asked the running handlers of 3 job(s) to stop" in out
    assert set(states(reader, waiting).values()) == {"cancelled"}
    for job in held:
        row = reader.store.job_get(job)
        assert row is not None
        assert (row.state, row.version) == ("running", before[job].version)
        assert row.cancel_requested_at is not None
    assert app.mark_started(batch, batch.jobs, app.now()) == []  # the request is honoured
    assert set(states(reader, held).values()) == {"cancelled"}
    history = reader.get(waiting[0]).history[-1]
    assert (history.trigger, history.to_state) == ("cancel", "cancelled")
    assert history.detail is not None and history.detail["filter"] == "kind=ok"


def test_bulk_commands_refuse_wrong_command_lines_and_nothing_matched(
    db_url: str, app: Engine, reader: Engine, mix: dict[str, list[int]]
) -> None:
    before = snapshot(reader)
    assert "name job IDs" in refused(run(db_url, "requeue"), 2)
    assert "not both" in refused(run(db_url, "requeue", "1", "--state", "quarantined"), 2)
    assert "contradict" in refused(run(db_url, "cancel", "--kind", "ok", "--dry-run", "--yes"), 2)
    out = refused(run(db_url, "requeue", "--state", "quarantine", "--yes"), 2)
    assert "unknown state 'quarantine'" in out and "quarantined" in out
    assert "--batch-size" in refused(run(db_url, "cancel", "--kind", "ok", "--batch-size", "0"), 2)
    assert "--since" in refused(run(db_url, "requeue", "--since", "yesterday-ish"), 2)
    assert "--reason" in refused(run(db_url, "requeue", "--reason", "bored"), 2)
    nothing = refused(run(db_url, "requeue", "--kind", "nothing", "--yes"), 1)
    assert "no job matches kind=nothing: nothing to requeue" in nothing
    assert "no job matches" in refused(run(db_url, "cancel", "--queue", "nowhere"), 1)
    assert snapshot(reader) == before


def test_since_and_before_select_by_the_time_of_the_last_change(
    db_url: str, app: Engine, reader: Engine, clock: FrozenClock, mix: dict[str, list[int]]
) -> None:
    """--since and --before take a time (UTC unless it says) or an age, on updated_at."""
    out = ok(run(db_url, "cancel", "--since", "2026-01-01T00:30:00"))
    assert listed(out) == mix["fresh"]
    out = ok(run(db_url, "requeue", "--before", "2026-01-01T01:30:00+01:00", "--show", "50"))
    assert listed(out) == every(mix)[: -len(mix["fresh"])]
    out = ok(run(db_url, "requeue", "--since", "2h", "--before", "30m", "--reason", "exhausted"))
    assert listed(out) == mix["exhausted"]


# -- bulk actions: the Python API -----------------------------------------------------------


def test_api_plan_changes_nothing_and_apply_works_in_batches(
    app: Engine, reader: Engine, mix: dict[str, list[int]]
) -> None:
    selection = JobFilter(states=("quarantined", "succeeded"))
    before = snapshot(reader)
    plan = bulk.plan(app, "requeue", selection, sample=4)
    assert plan.matched == 12 and plan.by_state == {"quarantined": 9, "succeeded": 3}
    assert [v.row.id for v in plan.sample] == sorted(mix["done"] + mix["bad"])[:4]
    assert [v.dest for v in plan.sample[:3]] == [None, None, None]  # done: succeeded
    assert plan.sample[0].code == "not_applicable" and plan.sample[3].dest == "pending"
    assert not plan.shown_all and plan.missing == []
    assert snapshot(reader) == before

    seen: list[int] = []
    report = bulk.apply(
        app, "requeue", selection, batch_size=5, on_batch=lambda r: seen.append(r.matched)
    )
    assert seen == [5, 10, 12] and report.batches == 3
    assert report.matched == 12 and report.moved == {"pending": 9} and report.skipped == 3
    assert report.skip_codes == {"not_applicable": 3}
    assert sorted(s.job_id for s in report.skips) == mix["done"]
    quarantined = mix["bad"] + mix["exhausted"] + mix["loose"]
    assert set(states(reader, quarantined).values()) == {"pending"}
    runs = {(reader.get(job).history[-1].detail or {}).get("bulk") for job in quarantined}
    assert runs == {report.run}
    with pytest.raises(ValueError, match="name job ids or give a filter"):
        bulk.apply(app, "cancel", JobFilter())
    with pytest.raises(ValueError, match="action is one of"):
        bulk.plan(app, "delete", selection)
    with pytest.raises(ValueError, match="ids alone"):
        JobFilter(ids=(1,), kinds=("ok",))


def test_api_requeue_keeps_the_dedupe_key_rules_within_a_batch(app: Engine, reader: Engine) -> None:
    """Two quarantined jobs of one key (its TTL passed between them): a bulk requeue gives
    the key back to the first; the second is skipped, the key now being live with the
    first, exactly as two one-job requeues would do."""
    first = app.enqueue("short", {"n": 1})
    app.run_until_idle()
    second = app.enqueue("short", {"n": 1})  # the key expired and its job is final
    assert second != first
    app.run_until_idle()
    third = app.enqueue("short", {"n": 2})
    app.run_until_idle()
    assert set(states(reader, [first, second, third]).values()) == {"quarantined"}

    report = bulk.apply(app, "requeue", JobFilter(kinds=("short",)), batch_size=10)
    assert report.batches == 1 and report.moved == {"pending": 2}
    assert report.skip_codes == {"key_taken": 1}
    (skip,) = report.skips
    assert skip.job_id == second and f"now belongs to job {first}" in skip.why
    assert states(reader, [first, second, third]) == {
        first: "pending",
        second: "quarantined",
        third: "pending",
    }
    assert app.key_holder("short", "short:1") == first
    alone = bulk.apply(app, "requeue", JobFilter(ids=(second,)))  # its key: live with first
    assert alone.skip_codes == {"key_taken": 1} and alone.changed == 0
    assert f"now belongs to job {first}" in alone.skips[0].why
    assert reader.get(second).state == "quarantined"


def test_api_apply_reads_again_a_job_that_changed_meanwhile(
    app: Engine, reader: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job claimed between a batch's read and its write is read again: by filter it no
    longer matches (skipped, and left running); named by id, the cancel rule asks its
    handler to stop."""
    jobs = make(app, "ok", range(1, 5))
    write = sql.job_operator_writes
    claimed: list[int] = []

    def claim_first(db: Any, writes: Any) -> list[int]:
        if not claimed:  # another worker claims the first job before the first write
            claimed.extend(c.job_id for c in app.claim(app.now(), 1).jobs)
        return write(db, writes)

    monkeypatch.setattr(sql, "job_operator_writes", claim_first)
    report = bulk.apply(app, "cancel", JobFilter(states=("pending",)))
    assert claimed == jobs[:1]
    assert report.moved == {"cancelled": 3} and report.skip_codes == {"no_longer_matches": 1}
    assert report.skips[0].job_id == jobs[0] and "no longer matches" in report.skips[0].why
    assert reader.get(jobs[0]).state == "running"

    more = make(app, "ok", range(5, 7))
    claimed.clear()
    named = bulk.apply(app, "cancel", JobFilter(ids=tuple(more)))
    assert claimed == more[:1]
    assert named.requested == 1 and named.moved == {"cancelled": 1} and named.skipped == 0
    assert sorted(named.done) == [(more[0], "requested"), (more[1], "cancelled")]
    row = reader.store.job_get(more[0])
    assert row is not None and row.state == "running" and row.cancel_requested_at is not None
