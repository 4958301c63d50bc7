"""The dashboard's pages and actions over HTTP (Starlette's test client, in process), on a
real SQLite file and a real PostgreSQL schema: the figures match the jobs, lists filter and
page, the job page answers, and every action is refused without a sign-in, without the
form's CSRF token, from another site, or in read-only mode, and recorded with who did it."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from engine import Engine, FrozenClock, JobContext, Permanent, RetryPolicy
from engine.cli import cli
from engine.web import Access, create_app, figures
from engine.web.access import COOKIE

TOKEN = "0123456789abcdef-shared"
ALICE = "alice-personal-token-1"


class Order(BaseModel):
    n: int


class Note(BaseModel):
    text: str


def build(db_url: str, clock: FrozenClock) -> Engine:
    """Kinds: ``ok`` succeeds (returns its number), ``bad`` raises Permanent, ``fails``
    is exhausted after one attempt; a cron schedule ``nightly`` fires ``ok``."""
    app = Engine(db_url, clock=clock, seed=7)

    @app.job(payload=Order, idempotency=lambda p: f"ok:{p.n}")
    def ok(ctx: JobContext, p: Order) -> int:
        return p.n

    @app.job(payload=Order, idempotency=lambda p: f"bad:{p.n}")
    def bad(ctx: JobContext, p: Order) -> None:
        raise Permanent(f"order {p.n} cannot ship")

    @app.job(
        payload=Order,
        idempotency=lambda p: f"fails:{p.n}",
        retry=RetryPolicy(max_attempts=1, base=0, jitter=0),
    )
    def fails(ctx: JobContext, p: Order) -> None:
        raise ConnectionError(f"upstream down for {p.n}")

    @app.job(payload=Note, idempotency=lambda p: f"note:{p.text}")
    def noted(ctx: JobContext, p: Note) -> None:
        raise Permanent(f"cannot file {p.text}")

    @app.cron("0 3 * * *", name="nightly")
    def nightly(ctx: JobContext) -> None:
        return None

    return app


@pytest.fixture
def app(db_url: str, clock: FrozenClock) -> Iterator[Engine]:
    eng = build(db_url, clock)
    yield eng
    eng.close()


def client(app: Engine, **access: object) -> TestClient:
    return TestClient(create_app(app, access=Access(**access)))  # type: ignore[arg-type]


def signed_in(app: Engine, name: str = "alice", **access: object) -> TestClient:
    """A client signed in with the shared token as ``name``."""
    web = client(app, tokens={TOKEN: None}, **access)
    response = web.post("/login", data={"token": TOKEN, "name": name, "next": "/"})
    assert response.status_code == 200 and COOKIE in web.cookies
    return web


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def seed(app: Engine) -> dict[str, list[int]]:
    """3 ok (succeeded), 2 bad (quarantined, permanent), 1 fails (quarantined, exhausted),
    2 ok left pending (enqueued after the run)."""
    ids = {
        "ok": [app.enqueue("ok", {"n": n}) for n in range(1, 4)],
        "bad": [app.enqueue("bad", {"n": n}) for n in range(1, 3)],
        "fails": [app.enqueue("fails", {"n": 1})],
    }
    app.run_until_idle()
    ids["pending"] = [app.enqueue("ok", {"n": n}) for n in (10, 11)]
    return ids


def finished(web: TestClient, run: str) -> str:
    """The page of a bulk run once the run is done (it runs in a thread)."""
    for _ in range(200):
        page = web.get(run)
        assert page.status_code == 200
        if 'id="run-state">done<' in page.text:
            return page.text
        time.sleep(0.05)
    raise AssertionError(f"the bulk run {run} did not finish")


def figure(html: str, chart: str, state: str) -> str:
    table = html.split(f'data-chart="{chart}"', 1)[1].split("</table>", 1)[0]
    found = re.search(rf'data-state="{state}">([^<]*)<', table)
    assert found, f"no figure for {state}"
    return found.group(1)


def test_overview_counts_match_the_jobs(app: Engine) -> None:
    seed(app)
    web = client(app)
    page = web.get("/")
    assert page.status_code == 200
    for state, count in (("succeeded", "3"), ("quarantined", "3"), ("pending", "2")):
        assert figure(page.text, "lifecycle", state) == count
    panel = web.get("/panel?window=5m").text
    assert figure(panel, "lifecycle", "running") == "0"
    # Transitions in the window: 6 starts, 3 succeed, 2 fail_permanent, 1 fail.
    assert "lifecycle: 12 transitions in the window" in panel


def test_the_live_chart_is_drawn_with_its_counts(app: Engine) -> None:
    seed(app)
    svg = client(app).get("/charts/lifecycle.svg")
    assert svg.status_code == 200 and svg.headers["content-type"].startswith("image/svg+xml")
    assert "(3 jobs)" in svg.text and "succeed x3" in svg.text
    assert client(app).get("/charts/nope.svg").status_code == 404


def test_counts_past_the_cap_say_so(app: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(app)
    monkeypatch.setattr(figures, "COUNT_CAP", 2)
    page = client(app).get("/panel")
    assert figure(page.text, "lifecycle", "succeeded") == "2+"
    assert figure(page.text, "lifecycle", "pending") == "2"  # exactly the cap: no "+"


def test_lists_filter_and_page_by_cursor(app: Engine) -> None:
    ids = seed(app)
    web = client(app)
    quarantined = web.get("/jobs?state=quarantined")
    assert set(map(int, re.findall(r'data-id="(\d+)"', quarantined.text))) == set(
        ids["bad"] + ids["fails"]
    )
    bad = web.get("/jobs?state=quarantined&reason=permanent&kind=bad")
    assert set(map(int, re.findall(r'data-id="(\d+)"', bad.text))) == set(ids["bad"])
    for n in range(30):
        app.enqueue("ok", {"n": 100 + n})
    seen: list[int] = []
    url = "/jobs?kind=ok&limit=25"
    while url:
        page = web.get(url)
        seen += map(int, re.findall(r'data-id="(\d+)"', page.text))
        more = re.search(r'id="next-page" href="([^"]+)"', page.text)
        url = more.group(1).replace("&amp;", "&") if more else ""
    assert seen == sorted(seen, reverse=True) and len(seen) == len(set(seen)) == 35


def test_ages_filter_lists(app: Engine, clock: FrozenClock) -> None:
    ids = seed(app)
    clock.advance(timedelta(hours=2))
    newer = app.enqueue("ok", {"n": 50})
    web = client(app)
    recent = web.get("/jobs?newer=1h").text
    assert re.findall(r'data-id="(\d+)"', recent) == [str(newer)]
    stale = set(map(int, re.findall(r'data-id="(\d+)"', web.get("/jobs?older=1h").text)))
    assert newer not in stale and set(ids["ok"]) <= stale


def test_search_by_id_key_and_correlation_id(app: Engine) -> None:
    ids = seed(app)
    web = client(app)
    job = app.get(ids["bad"][0])
    for text in (str(job.id), "bad:1", job.correlation_id):
        found = re.findall(r'data-id="(\d+)"', web.get("/jobs", params={"q": text}).text)
        assert found == [str(job.id)], text
    assert "No jobs match" in web.get("/jobs?q=nothing-like-this").text


def test_bad_filters_are_explained(app: Engine) -> None:
    seed(app)
    web = client(app)
    unknown = web.get("/jobs?state=finished")
    assert unknown.status_code == 400
    assert "unknown state 'finished'" in html.unescape(unknown.text)
    age = web.get("/jobs?older=soon")
    assert age.status_code == 400 and "not an age" in age.text
    assert web.get("/jobs?limit=100000").status_code == 400


def test_the_job_page_answers_the_four_questions(app: Engine) -> None:
    ids = seed(app)
    page = client(app).get(f"/jobs/{ids['bad'][0]}")
    assert page.status_code == 200
    for question in ("did it run", "did it succeed", "why did it fail", "will it retry"):
        assert f'data-question="{question}"' in page.text
    assert "Permanent: order 1 cannot ship" in page.text
    assert "Traceback (most recent call last)" in page.text
    assert "fail_permanent" in page.text  # the history
    assert client(app).get("/jobs/999999").status_code == 404
    chart = client(app).get(f"/jobs/{ids['bad'][0]}/chart.svg")
    assert chart.status_code == 200 and "<svg" in chart.text


def test_actions_are_refused_without_a_sign_in(app: Engine) -> None:
    ids = seed(app)
    job_id = ids["bad"][0]
    web = client(app, tokens={TOKEN: None})
    refused = web.post(f"/jobs/{job_id}/requeue", data={"csrf": "x"})
    assert refused.status_code == 403 and "Sign in" in refused.text
    assert app.get(job_id).state == "quarantined"
    wrong = web.post("/login", data={"token": "not-the-token-at-all", "name": "mallory"})
    assert wrong.status_code == 403 and COOKIE not in web.cookies


def test_actions_need_the_forms_csrf_token_and_the_same_site(app: Engine) -> None:
    ids = seed(app)
    job_id = ids["bad"][0]
    web = signed_in(app)
    token = csrf_of(web.get(f"/jobs/{job_id}").text)
    for data, headers in (
        ({}, {}),
        ({"csrf": "0" * 64}, {}),
        ({"csrf": token}, {"origin": "https://evil.example"}),
    ):
        refused = web.post(f"/jobs/{job_id}/requeue", data=data, headers=headers)
        assert refused.status_code == 403, (data, headers)
    assert app.get(job_id).state == "quarantined"
    other = signed_in(app, "bob")  # a CSRF token is bound to its session
    assert other.post(f"/jobs/{job_id}/requeue", data={"csrf": token}).status_code == 403
    done = web.post(f"/jobs/{job_id}/requeue", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303 and "requeued" in done.headers["location"]
    view = app.get(job_id)
    assert view.state == "pending"
    last = view.history[-1]
    assert last.trigger == "requeue" and last.detail is not None
    assert (last.detail["operator"], last.detail["via"]) == ("alice", "dashboard")
    assert "by alice via dashboard" in web.get(f"/jobs/{job_id}").text


def test_a_cancel_from_the_job_page(app: Engine) -> None:
    ids = seed(app)
    job_id = ids["pending"][0]
    web = signed_in(app, "carol")
    token = csrf_of(web.get(f"/jobs/{job_id}").text)
    assert web.post(f"/jobs/{job_id}/cancel", data={"csrf": token}).status_code == 200
    assert app.get(job_id).state == "cancelled"
    again = web.post(f"/jobs/{job_id}/cancel", data={"csrf": token})
    assert again.status_code == 409 and "cancel applies to jobs in" in html.unescape(again.text)


def test_personal_tokens_bind_the_name(app: Engine) -> None:
    ids = seed(app)
    web = client(app, tokens={ALICE: "alice"})
    web.post("/login", data={"token": ALICE, "name": "someone-else"})
    token = csrf_of(web.get("/").text)
    web.post(f"/jobs/{ids['bad'][1]}/requeue", data={"csrf": token})
    detail = app.get(ids["bad"][1]).history[-1].detail or {}
    assert detail["operator"] == "alice"


def test_read_only_refuses_every_action(app: Engine) -> None:
    ids = seed(app)
    web = signed_in(app, read_only=True)
    page = web.get(f"/jobs/{ids['bad'][0]}").text
    assert 'id="do-requeue"' not in page and "Read-only" in page
    token = csrf_of(page)  # (the sign-out form still has one)
    refused = web.post(f"/jobs/{ids['bad'][0]}/requeue", data={"csrf": token})
    assert refused.status_code == 403 and "read-only" in refused.text
    assert app.get(ids["bad"][0]).state == "quarantined"


def test_private_mode_needs_a_sign_in_to_look(app: Engine) -> None:
    seed(app)
    web = client(app, tokens={TOKEN: None}, private=True)
    for path in ("/", "/jobs", "/jobs/1", "/panel", "/charts/lifecycle.svg", "/schedules"):
        response = web.get(path, follow_redirects=False)
        assert response.status_code == 303 and "/login?next=" in response.headers["location"]
    web.post("/login", data={"token": TOKEN, "name": "dan"})
    assert web.get("/").status_code == 200


def test_a_sign_in_never_redirects_to_another_site(app: Engine) -> None:
    web = client(app, tokens={TOKEN: None})
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        response = web.post(
            "/login", data={"token": TOKEN, "name": "a", "next": target}, follow_redirects=False
        )
        assert response.headers["location"] == "/", target


def test_bulk_requeue_shows_a_dry_run_then_applies(app: Engine) -> None:
    ids = seed(app)
    web = signed_in(app, "erin")
    preview = web.get("/bulk?action=requeue&state=quarantined")
    assert preview.status_code == 200
    assert re.search(r'id="matched">3<', preview.text)
    assert {app.get(i).state for i in ids["bad"] + ids["fails"]} == {"quarantined"}
    token = csrf_of(preview.text)
    applied = web.post(
        "/bulk",
        data={"csrf": token, "action": "requeue", "filter": "state=quarantined"},
        follow_redirects=False,
    )
    assert applied.status_code == 303 and "/bulk/runs/" in applied.headers["location"]
    page = finished(web, applied.headers["location"])
    assert "3 changed" in page and "started by erin" in page
    for job_id in ids["bad"] + ids["fails"]:
        last = app.get(job_id).history[-1]
        assert last.trigger == "requeue" and last.detail is not None
        assert last.detail["operator"] == "erin" and last.detail["filter"] == "state=quarantined"
    unsigned = client(app, tokens={TOKEN: None})
    refused = unsigned.post("/bulk", data={"action": "cancel", "filter": "state=pending"})
    assert refused.status_code == 403
    assert {app.get(i).state for i in ids["pending"]} == {"pending"}


def test_the_schedules_page(app: Engine) -> None:
    app.fire_schedules()
    page = client(app).get("/schedules")
    assert page.status_code == 200
    assert "nightly" in page.text and "0 3 * * *" in page.text


def test_the_command_refuses_to_listen_beyond_localhost_without_a_token() -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["dashboard", "--app", "tests.engine.cli_app:engine", "--host", "0.0.0.0"]
    )
    assert result.exit_code == 2 and "give --token or --tokens-file" in result.output
    short = runner.invoke(
        cli, ["dashboard", "--app", "tests.engine.cli_app:engine", "--token", "short"]
    )
    assert short.exit_code == 2 and "at least 16 characters" in short.output


def test_mounted_inside_another_asgi_app(app: Engine) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    ids = seed(app)
    dashboard = create_app(app, access=Access(tokens={TOKEN: None}))
    web = TestClient(Starlette(routes=[Mount("/ops", app=dashboard)]))
    page = web.get("/ops/")
    assert page.status_code == 200
    assert 'href="/ops/jobs"' in page.text and 'src="/ops/static/dashboard.js"' in page.text
    assert web.get("/ops/static/dashboard.css").status_code == 200
    login = web.post(
        "/ops/login",
        data={"token": TOKEN, "name": "gus", "next": f"/jobs/{ids['bad'][0]}"},
        follow_redirects=False,
    )
    assert login.headers["location"] == f"/ops/jobs/{ids['bad'][0]}"
    token = csrf_of(web.get(login.headers["location"]).text)
    done = web.post(f"/ops/jobs/{ids['bad'][0]}/requeue", data={"csrf": token})
    assert done.status_code == 200 and app.get(ids["bad"][0]).state == "pending"


def test_without_graphviz_the_pages_say_how_to_get_it(
    app: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(app)
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` on it
    web = client(app)
    page = web.get("/")
    assert page.status_code == 200 and "apt-get install graphviz" in page.text
    assert figure(page.text, "lifecycle", "succeeded") == "3"  # the figures need nothing
    svg = web.get("/charts/lifecycle.svg")
    assert svg.status_code == 503 and "apt-get install graphviz" in svg.text


def test_a_cancel_request_names_who_asked_until_it_is_honoured(app: Engine) -> None:
    """A job a handler holds cannot be cancelled at once: the request records its operator,
    the page and the answers name them, and the cancel that honours it says who asked."""
    job_id = app.enqueue("ok", {"n": 77})
    batch = app.claim(app.now(), 10)
    assert [c.job_id for c in batch.jobs] == [job_id]
    web = signed_in(app, "frank")
    token = csrf_of(web.get(f"/jobs/{job_id}").text)
    asked = web.post(f"/jobs/{job_id}/cancel", data={"csrf": token})
    assert asked.status_code == 200 and "Done: requested" in asked.text
    view = app.get(job_id)
    assert view.state == "running" and view.cancel_requested_by == "frank"
    assert "by frank" in asked.text  # the facts, and "will it retry?"
    assert app.mark_started(batch, batch.jobs, app.now()) == []  # the request is honoured
    last = app.get(job_id).history[-1]
    assert (last.trigger, last.to_state) == ("cancel", "cancelled")
    assert last.detail is not None and last.detail["requested_by"] == "frank"
    assert "requested by frank" in web.get(f"/jobs/{job_id}").text


def test_what_jobs_carry_is_shown_as_text_never_as_markup(app: Engine) -> None:
    evil = "<script>alert('x')</script><img src=x onerror=alert(1)>"
    job_id = app.enqueue("noted", {"text": evil})
    app.run_until_idle()
    web = client(app)
    for page in (
        web.get(f"/jobs/{job_id}"),
        web.get("/jobs?kind=noted"),
        web.get(f"/jobs?q=note:{evil}"),
    ):
        assert page.status_code == 200
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
    assert "&lt;script&gt;alert" in web.get(f"/jobs/{job_id}").text


def test_a_correlation_id_is_searched_among_the_latest_jobs(
    app: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Correlation ids have no index (it would cost every enqueue): the search looks
    through the latest jobs only, and says so."""
    from engine.web import views

    old = app.enqueue("ok", {"n": 1}, correlation_id="req-old")
    for n in range(2, 6):
        app.enqueue("ok", {"n": n})
    monkeypatch.setattr(views, "SEARCH_RECENT", 3)
    web = client(app)
    missed = web.get("/jobs?q=req-old").text
    assert "No jobs match" in missed and "among the latest 3 jobs" in missed
    recent = app.enqueue("ok", {"n": 9}, correlation_id="req-new")
    assert re.findall(r'data-id="(\d+)"', web.get("/jobs?q=req-new").text) == [str(recent)]
    assert re.findall(r'data-id="(\d+)"', web.get(f"/jobs?q={old}").text) == [str(old)]


def test_a_dry_run_counts_up_to_a_cap(app: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.web import views

    seed(app)
    monkeypatch.setattr(views, "COUNT_CAP", 2)
    preview = signed_in(app).get("/bulk?action=requeue&state=quarantined")
    assert re.search(r'id="matched">2\+<', preview.text)
    assert "Requeue 2+ job(s)" in preview.text


def test_a_bulk_run_that_fails_says_so_and_unknown_runs_are_404(app: Engine) -> None:
    seed(app)
    web = signed_in(app, "gwen")
    token = csrf_of(web.get("/").text)
    bad = web.post("/bulk", data={"csrf": token, "action": "delete", "filter": "state=pending"})
    assert bad.status_code == 400 and "action is one of" in html.unescape(bad.text)
    everything = web.post("/bulk", data={"csrf": token, "action": "cancel", "filter": ""})
    assert everything.status_code == 400 and "give a filter" in everything.text
    assert web.get("/bulk/runs/nope").status_code == 404


def test_a_long_history_is_read_by_its_ends(app: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page reads a history's first and latest events and counts the rest (a poller
    checking for a week must not load a week of events); its answers count them all."""
    from engine.web import views

    monkeypatch.setattr(views, "HISTORY_HEAD", 2)
    monkeypatch.setattr(views, "HISTORY_TAIL", 3)
    job_id = app.enqueue("bad", {"n": 5})
    app.run_until_idle()
    for _ in range(3):
        app.requeue(job_id)
        app.run_until_idle()
    assert len(app.get(job_id).history) == 12
    page = html.unescape(client(app).get(f"/jobs/{job_id}").text)
    assert "7 events left out" in page
    assert page.count('class="ev ev-') == 5
    assert "Yes: 4 attempts in all, 1 since it was last requeued." in page
    chart = client(app).get(f"/jobs/{job_id}/chart.svg").text
    assert "requeue x3" in chart and "start" in chart


def test_the_dashboard_answers_only_to_its_own_host_names(app: Engine) -> None:
    web = TestClient(
        create_app(app, access=Access(), allowed_hosts=["127.0.0.1", "localhost"]),
        base_url="http://evil.example:8080",
    )
    assert web.get("/").status_code == 400  # a rebinding site cannot read it
    local = TestClient(create_app(app, allowed_hosts=["127.0.0.1"]), base_url="http://127.0.0.1")
    page = local.get("/")
    assert page.status_code == 200
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_bad_input_is_a_clear_refusal_never_a_500(app: Engine) -> None:
    seed(app)
    web = signed_in(app)
    token = csrf_of(web.get("/").text)
    huge = "9" * 30
    for path, status in (
        (f"/jobs/{huge}", 404),
        (f"/jobs/{huge}/chart.svg", 404),
        (f"/jobs?after={huge}", 400),
        ("/jobs?after=abc", 400),
        ("/jobs?after=%C2%B2", 400),
        ("/jobs?limit=abc", 400),
        ("/jobs?q=%00", 400),
        ("/jobs?kind=%00", 400),
        ("/jobs?queue=a%00", 400),
        ("/jobs?reason=%00", 400),
        ("/bulk?action=requeue&queue=%00", 400),
        ("/jobs?kind=" + ",".join(f"k{n}" for n in range(30)), 400),
    ):
        assert web.get(path).status_code == status, path
    assert web.post(f"/jobs/{huge}/requeue", data={"csrf": token}).status_code == 404
    assert web.post("/jobs/123456/requeue", data={"csrf": token}).status_code == 404
    assert web.post("/jobs/1/requeue", data={"csrf": "é"}).status_code == 403
    web.cookies.set(COOKIE, "a|1|x")
    assert web.get("/").status_code == 200  # a malformed cookie is no one


def test_repeated_filter_values_list_each_job_once(app: Engine) -> None:
    seed(app)
    web = client(app)
    for path in ("/jobs?kind=ok,ok", "/jobs?state=quarantined,quarantined,succeeded"):
        listed = re.findall(r'data-id="(\d+)"', web.get(path).text)
        assert len(listed) == len(set(listed)) > 0, path
    assert len(re.findall(r'data-id="(\d+)"', web.get("/jobs?kind=ok,ok").text)) == 5


def test_names_in_any_script_sign_in(app: Engine) -> None:
    seed(app)
    for name in ("李雷", "Zoë 🙂"):
        web = client(app, tokens={TOKEN: None})
        response = web.post("/login", data={"token": TOKEN, "name": name})
        assert response.status_code == 200 and name in response.text


def test_under_a_mount_a_sign_in_returns_to_the_page(app: Engine) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    seed(app)
    dashboard = create_app(app, access=Access(tokens={TOKEN: None}, private=True))
    web = TestClient(Starlette(routes=[Mount("/ops", app=dashboard)]))
    first = web.get("/ops/jobs?state=quarantined", follow_redirects=False)
    assert first.headers["location"].startswith("/ops/login?next=%2Fjobs%3Fstate")
    login = web.get(first.headers["location"])
    target = re.search(r'name="next" value="([^"]+)"', login.text)
    assert target is not None
    back = web.post(
        "/ops/login",
        data={"token": TOKEN, "name": "ida", "next": html.unescape(target.group(1))},
        follow_redirects=False,
    )
    assert back.headers["location"] == "/ops/jobs?state=quarantined"
    assert web.get(back.headers["location"]).status_code == 200


def test_a_filter_no_index_holds_searches_a_window_per_page(
    app: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.web import views

    old = app.enqueue("ok", {"n": 500}, queue="rare")
    for n in range(501, 510):
        app.enqueue("ok", {"n": n})
    monkeypatch.setattr(views, "SCAN_WINDOW", 4)
    web = client(app)
    page = web.get("/jobs?queue=rare").text
    assert "No jobs match" in page and 'id="searched-to"' in page and "search further" in page
    found: list[str] = []
    url = "/jobs?queue=rare"
    for _ in range(10):
        page = web.get(url).text
        found += re.findall(r'data-id="(\d+)"', page)
        more = re.search(r'id="next-page" href="([^"]+)"', page)
        if more is None:
            break
        url = more.group(1).replace("&amp;", "&")
    assert found == [str(old)]
    preview = signed_in(app).get("/bulk?action=cancel&queue=rare").text
    assert 'id="searched-to"' in preview and re.search(r'id="matched">0<', preview)
