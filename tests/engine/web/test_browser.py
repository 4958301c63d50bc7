"""The dashboard end to end in a real browser: Debian's headless Chromium driven by
Playwright, against ``jobcharts``' ASGI app served by uvicorn, with a real ``jobcharts
worker`` process working the jobs, on a SQLite file and on PostgreSQL.

It loads the overview and sees the counts change without a reload, filters a list, opens a
job and reads its four answers, is refused a requeue without the token, then signs in,
requeues the quarantined job through the page and sees it succeed, with the operator's
name in its history. With ``JOBCHARTS_SCREENSHOTS=DIR`` the pages are saved there (the
screenshots of docs/dashboard.md come from such a run).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.web import Access, create_app
from tests.engine.web.browser_app import build

ROOT = Path(__file__).resolve().parents[3]
TOKEN = "e2e-operator-token-0001"
WAIT = 30.0


def _missing(what: str) -> None:
    if os.environ.get("JOBCHARTS_CI"):
        pytest.fail(f"{what} is required in CI (.ci/run installs it)")
    pytest.skip(f"{what} not installed: the browser tests were not run")


def chromium() -> str:
    found = (
        os.environ.get("JOBCHARTS_CHROMIUM")
        or shutil.which("chromium")
        or shutil.which("chromium-browser")
    )
    if not found:
        _missing("Chromium (Debian: apt-get install chromium)")
    return str(found)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[str, Any]]:
    """The dashboard of the browser app on ``db_url``, served by uvicorn in a thread:
    (its base URL, the app's engine)."""
    uvicorn = pytest.importorskip("uvicorn")
    app = build()
    app.bind(db_url)
    app.open()
    port = free_port()
    web = create_app(app, access=Access(tokens={TOKEN: None}), stats_every=0.5)
    server = uvicorn.Server(
        uvicorn.Config(web, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started:
        assert time.monotonic() < deadline, "the dashboard did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        server.should_exit = True
        thread.join(WAIT)
        app.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("Playwright for Python (pip install playwright)")
    path = chromium()
    with sync_playwright() as p:
        instance = p.chromium.launch(executable_path=path, headless=True, args=["--no-sandbox"])
        try:
            yield instance
        finally:
            instance.close()


def start_worker(db_url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBCHARTS_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "engine.cli", "--log-level", "warning", "worker"]
    command += ["--app", "tests.engine.web.browser_app:engine", "--db", db_url]
    command += ["--concurrency", "1", "--poll", "0.05"]
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(WAIT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def shot(page: Any, name: str, tmp_path: Path, backend: str) -> None:
    """Save the page as NAME.png (in $JOBCHARTS_SCREENSHOTS for the docs, SQLite run)."""
    folder = os.environ.get("JOBCHARTS_SCREENSHOTS")
    target = Path(folder) if folder and backend == "sqlite" else tmp_path
    target.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target / f"{name}.png"), full_page=True)


def figure(page: Any, state: str) -> str:
    return str(page.inner_text(f'table.figures[data-chart="lifecycle"] td[data-state="{state}"]'))


def test_an_operator_watches_filters_reads_and_requeues(
    served: tuple[str, Any], browser: Any, db_url: str, backend: str, tmp_path: Path
) -> None:
    base, app = served
    flaky = app.enqueue("flaky", {"marker": str(tmp_path / "fixed")})
    for n in range(6):
        app.enqueue("work", {"n": n})
    for name in ("moon", "mars"):
        app.enqueue("reject", {"marker": name})
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    # The overview, live: counts change with no reload while a worker runs the jobs.
    page.goto(f"{base}/")
    assert figure(page, "pending") == "9" and figure(page, "succeeded") == "0"
    page.evaluate("window.__not_reloaded = true")
    worker = start_worker(db_url)
    try:
        page.wait_for_function(
            """() => {
                const cell = (s) => document.querySelector(
                    `table.figures[data-chart="lifecycle"] td[data-state="${s}"]`);
                return cell("succeeded").textContent === "6"
                    && cell("quarantined").textContent === "3";
            }""",
            timeout=WAIT * 1000,
        )
        assert page.evaluate("window.__not_reloaded") is True
        # The diagram is fetched beside the figures, each tick: it catches up within one.
        page.wait_for_function(
            """() => document.querySelector('.diagram[data-chart="lifecycle"]')
                .innerHTML.includes("(6 jobs)")""",
            timeout=WAIT * 1000,
        )
        page.wait_for_function(  # the stats catch up within a refresh or two
            "() => document.querySelector('#stats').textContent.includes('reject')",
            timeout=WAIT * 1000,
        )
        shot(page, "overview", tmp_path, backend)

        # A list, filtered in the form.
        page.goto(f"{base}/jobs")
        page.select_option("select[name=state]", "quarantined")
        page.click("#filters button[type=submit]")
        page.wait_for_url("**/jobs?*state=quarantined*")
        states = page.eval_on_selector_all(
            "#jobs tbody tr", "rows => rows.map(r => r.dataset.state)"
        )
        assert states == ["quarantined"] * 3
        shot(page, "jobs", tmp_path, backend)

        # A job, and its four answers.
        page.click(f'#jobs a[href$="/jobs/{flaky}"]')
        answers = {
            q: page.inner_text(f'dd[data-question="{q}"]')
            for q in ("did it run", "did it succeed", "why did it fail", "will it retry")
        }
        assert answers["did it run"].startswith("Yes: 1 attempt")
        assert answers["did it succeed"].startswith("No: it ended in 'quarantined'")
        assert "not fixed yet" in answers["why did it fail"]
        assert answers["will it retry"].startswith("No: it is final")

        # No token, no requeue: the button is off, and the request itself is refused.
        assert page.is_disabled("#actions button:has-text('Requeue')")
        refused = page.request.post(f"{base}/jobs/{flaky}/requeue", form={"csrf": "forged"})
        assert refused.status == 403
        assert app.get(flaky).state == "quarantined"
        page.click("text=Sign in")
        page.fill("input[name=name]", "alice")
        page.fill("input[name=token]", "not-the-right-token")
        page.click("form.login button")
        assert "Wrong token" in page.inner_text("#login-error")
        assert app.get(flaky).state == "quarantined"

        # Signed in with the token: requeue through the page, and see it succeed.
        page.fill("input[name=name]", "alice")
        page.fill("input[name=token]", TOKEN)
        page.click("form.login button")
        page.wait_for_selector("#operator")
        page.goto(f"{base}/jobs/{flaky}")
        page.click("#do-requeue")
        assert "requeued" in page.inner_text("#done")
        deadline = time.monotonic() + WAIT
        while page.inner_text("#job-state") != "succeeded":
            assert time.monotonic() < deadline, "the requeued job did not succeed"
            time.sleep(0.2)
            page.reload()
        assert "by alice via dashboard" in page.inner_text("#history")
        assert page.inner_text('dd[data-question="did it succeed"]').startswith("Yes")
        page.wait_for_selector(".diagram svg")  # its path, drawn on its chart version
        shot(page, "job", tmp_path, backend)

        # A bulk action's dry run over what is left quarantined.
        page.goto(f"{base}/jobs?state=quarantined")
        page.click("#bulk-requeue")
        assert page.inner_text("#matched") == "2"
        shot(page, "bulk", tmp_path, backend)
        page.click("#confirm-bulk")  # signed in: the run starts, its page follows it
        page.wait_for_selector("#run-state:has-text('done')", timeout=WAIT * 1000)
        assert "2 changed (2 to pending)" in page.inner_text("#bulk-report")
    finally:
        stop(worker)
    view = app.get(flaky)
    assert [e.trigger for e in view.history][-3:] == ["requeue", "start", "succeed"]
