"""The dashboard's ASGI app (Starlette, Jinja2 templates, a few lines of plain JavaScript
for live updates: no build step).

Pages: the overview (every chart drawn live, its figures, the stats), job lists with
filters and cursor pagination, a job's page (the four answers, its path on its own chart
version, history, steps, payload, error), bulk actions with a dry run, schedules, sign-in.
Every read is bounded (``engine.store.dashboard``, ``engine.bulk.page``). Endpoints are
plain functions: Starlette runs them in its thread pool, since the engine's reads are
synchronous.
"""

from __future__ import annotations

import html
import shutil
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from engine import bulk, operators
from engine.badges import chart_badges
from engine.engine import Engine
from engine.errors import JobchartsError, JobNotFound, NoSchema
from engine.stats import stats
from engine.view import path_chart, schedule_rows, stray_note, waiting_reason
from engine.web import views
from engine.web.access import COOKIE, SESSION_SECONDS, Access, Operator
from engine.web.figures import Overview, OverviewCache, StatsCache
from engine.web.runs import Runs
from statecharts.render import GRAPHVIZ_INSTALL, RenderError, age_text, to_image

HERE = Path(__file__).parent
WINDOWS = {"5m": 300, "1h": 3600, "24h": 86400}
GRAPHVIZ_HINT = f"Diagrams need Graphviz's `dot` ({GRAPHVIZ_INSTALL}); the figures need nothing."


class Dashboard:
    """The dashboard of one engine: its caches, its access rules and its routes."""

    def __init__(self, engine: Engine, access: Access, stats_every: float) -> None:
        self.engine = engine
        self.access = access
        self.overviews = OverviewCache(engine)
        self.runs = Runs(engine)
        self.stats = StatsCache(lambda: stats(engine), every=stats_every)
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.globals.update(
            when=views.when,
            ago=views.ago,
            age_text=age_text,
            json_text=views.json_text,
            hint=GRAPHVIZ_HINT,
        )

    # -- plumbing --------------------------------------------------------------------------

    def page(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        operator = self.operator(request)
        cookie = request.cookies.get(COOKIE)
        context.update(
            request=request,
            base=views.base(request),
            here=views.here(request),
            operator=operator,
            access=self.access,
            can_act=operator is not None and not self.access.read_only,
            csrf=self.access.csrf(cookie) if operator else "",
            graphviz=shutil.which("dot") is not None,
        )
        return self.templates.TemplateResponse(request, name, context, status_code=status)

    def operator(self, request: Request) -> Operator | None:
        return self.access.operator(request.cookies.get(COOKIE))

    def guard_view(self, request: Request) -> Response | None:
        """In private mode, a sign-in before any page."""
        if self.access.private and self.operator(request) is None:
            base = views.base(request)
            return RedirectResponse(f"{base}/login?{urlencode({'next': views.here(request)})}", 303)
        return None

    async def form(self, request: Request) -> dict[str, str]:
        """A urlencoded form's fields (the first value of each)."""
        body = (await request.body()).decode("utf-8", errors="replace")
        return {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}

    def refuse_action(self, request: Request, fields: dict[str, str]) -> Response | None:
        """Why a POST that acts may not (403), or None: read-only mode, no sign-in, a
        missing or wrong CSRF token, a cross-site origin."""
        if self.access.read_only:
            return self.denied(request, "The dashboard is read-only: no action can be taken.")
        operator = self.operator(request)
        if operator is None:
            why = (
                "Sign in with an operator token to act on jobs."
                if self.access.login_enabled
                else "Actions are off: start the dashboard with --token or --tokens-file."
            )
            return self.denied(request, why)
        if (foreign := views.foreign_origin(request)) is not None:
            return self.denied(request, f"Refused: a request from another site ({foreign}).")
        if not self.access.csrf_ok(request.cookies.get(COOKIE), fields.get("csrf")):
            return self.denied(request, "Refused: the form's CSRF token is missing or wrong.")
        return None

    def denied(self, request: Request, why: str) -> Response:
        return self.message(request, 403, "Not allowed", why)

    def by(self, request: Request) -> dict[str, str]:
        """The event detail naming who acted, and from where."""
        operator = self.operator(request)
        return {"operator": operator.name if operator else "?", "via": "dashboard"}

    def overview_of(self, request: Request) -> tuple[str, Overview]:
        """The window a page asks for (``?window=``, 1h by default) and its overview."""
        window = str(request.query_params.get("window", "1h"))
        window = window if window in WINDOWS else "1h"
        return window, self.overviews.get(timedelta(seconds=WINDOWS[window]))

    def message(self, request: Request, status: int, title: str, text: str) -> Response:
        """A page that only says something: a refusal, a bad request, a missing job."""
        return self.page(request, "message.html", status, title=title, message=text)

    # -- pages ------------------------------------------------------------------------------

    def overview(self, request: Request) -> Response:
        if (guard := self.guard_view(request)) is not None:
            return guard
        window, overview = self.overview_of(request)
        return self.page(
            request,
            "overview.html",
            overview=overview,
            window=window,
            windows=list(WINDOWS),
            stats=self.stats.latest(),
        )

    def panel(self, request: Request) -> Response:
        """The overview's figures alone (the page polls this)."""
        if (guard := self.guard_view(request)) is not None:
            return guard
        window, overview = self.overview_of(request)
        return self.page(
            request, "panel.html", overview=overview, window=window, stats=self.stats.latest()
        )

    def chart_svg(self, request: Request) -> Response:
        """A chart drawn live (review view, the app's retry badges), as SVG."""
        if (guard := self.guard_view(request)) is not None:
            return guard
        name = request.path_params["name"]
        _, overview = self.overview_of(request)
        figures = overview.chart(name)
        if figures is None:
            return Response(f"no chart named {name!r}", 404, media_type="text/plain")
        badges = chart_badges(self.engine.registry.specs, name) or None
        try:
            svg = self.overviews.svg(
                overview,
                name,
                lambda: to_image(
                    figures.chart, "svg", figures.overlay, view="review", badges=badges
                ),
            )
        except RenderError as error:
            return Response(str(error), 503, media_type="text/plain")
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    def jobs(self, request: Request) -> Response:
        if (guard := self.guard_view(request)) is not None:
            return guard
        try:
            listing = views.listing(self.engine, request.query_params)
        except ValueError as error:
            return self.message(request, 400, "Bad filter", str(error))
        return self.page(
            request,
            "jobs.html",
            listing=listing,
            recent=views.SEARCH_RECENT,
            window=views.SCAN_WINDOW,
            kinds=sorted(self.engine.registry.kinds),
            states=bulk.known_states(self.engine),
            page_sizes=views.PAGE_SIZES,
        )

    def job(self, request: Request) -> Response:
        if (guard := self.guard_view(request)) is not None:
            return guard
        job_id = int(request.path_params["job_id"])
        read = views.read_job(self.engine, views.job_id(job_id))
        if read is None:
            return self.message(request, 404, "No such job", f"No job {job_id}.")
        view = read.view
        answers = view.explain(
            self.engine.chart_of(view.chart),
            self.engine.now(),
            waiting=waiting_reason(self.engine, view),
            stray=stray_note(self.engine, job_id),
            **read.totals,
        )
        steps = self.engine.store.step_get_many([job_id]).get(job_id, {})
        return self.page(
            request,
            "job.html",
            job=view,
            history_head=read.head,
            history_tail=read.tail,
            history_hidden=read.hidden,
            answers=answers,
            steps=steps,
            actions=views.job_actions(self.engine, read.row),
            done=request.query_params.get("done"),
        )

    def job_svg(self, request: Request) -> Response:
        """A job's path drawn on the chart version it last moved under."""
        if (guard := self.guard_view(request)) is not None:
            return guard
        job_id = int(request.path_params["job_id"])
        store = self.engine.store
        row = store.job_get(views.job_id(job_id))
        if row is None:
            return Response(f"no job {job_id}", 404, media_type="text/plain")
        try:
            chart, overlay = path_chart(store, row)
            svg = to_image(chart, "svg", overlay, view="full")
        except JobNotFound as error:
            return Response(str(error), 404, media_type="text/plain")
        except RenderError as error:
            return Response(str(error), 503, media_type="text/plain")
        return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "no-store"})

    async def job_action(self, request: Request) -> Response:
        fields = await self.form(request)
        if (refused := self.refuse_action(request, fields)) is not None:
            return refused
        job_id = int(request.path_params["job_id"])
        action = request.path_params["action"]
        detail = self.by(request)
        try:
            dest = await run_in_threadpool(views.act_on_job, self.engine, job_id, action, detail)
        except JobNotFound as error:
            return self.message(request, 404, "No such job", str(error))
        except (JobchartsError, ValueError) as error:
            return self.message(request, 409, f"Cannot {action}", str(error))
        base = views.base(request)
        done = f"{views.PAST[action]} ({dest})" if dest != operators.REQUESTED else dest
        return RedirectResponse(f"{base}/jobs/{job_id}?{urlencode({'done': done})}", 303)

    def bulk_preview(self, request: Request) -> Response:
        """The dry run of a bulk action over a filtered list: what it would do."""
        if (guard := self.guard_view(request)) is not None:
            return guard
        action = request.query_params.get("action", "")
        try:
            f = views.job_filter(self.engine, request.query_params)
            plan = bulk.plan(
                self.engine,
                action,
                f,
                sample=20,
                count_cap=views.COUNT_CAP,
                window=views.SCAN_WINDOW,
            )
        except ValueError as error:
            return self.message(request, 400, "Bad request", str(error))
        return self.page(
            request,
            "bulk.html",
            plan=plan,
            action=action,
            filter_query=views.filter_query(request.query_params),
        )

    async def bulk_apply(self, request: Request) -> Response:
        fields = await self.form(request)
        if (refused := self.refuse_action(request, fields)) is not None:
            return refused
        action = fields.get("action", "")
        query = parse_qs(fields.get("filter", ""))
        params = {k: v[0] for k, v in query.items()}
        try:
            f = views.job_filter(self.engine, params)
            bulk.trigger_of(action, f)  # (the run starts in a thread: refuse here)
        except ValueError as error:
            return self.message(request, 400, "Bad request", str(error))
        run = self.runs.start(action, f, views.filter_query(params), self.by(request))
        base = views.base(request)
        return RedirectResponse(f"{base}/bulk/runs/{run.id}", 303)

    def bulk_run(self, request: Request) -> Response:
        """A bulk run's progress (the page refreshes itself until the run is done)."""
        if (guard := self.guard_view(request)) is not None:
            return guard
        run = self.runs.get(request.path_params["run_id"])
        if run is None:
            return self.message(
                request,
                404,
                "No such run",
                "No bulk run with that id here (runs are kept in memory until the "
                "dashboard restarts; their events are in each job's history).",
            )
        return self.page(request, "run.html", run=run)

    def schedules(self, request: Request) -> Response:
        if (guard := self.guard_view(request)) is not None:
            return guard
        return self.page(request, "schedules.html", rows=schedule_rows(self.engine))

    def login_form(self, request: Request) -> Response:
        return self.page(
            request,
            "login.html",
            next=views.safe_next(request.query_params.get("next")),
            error=None,
        )

    async def login(self, request: Request) -> Response:
        fields = await self.form(request)
        if (foreign := views.foreign_origin(request)) is not None:
            return self.denied(request, f"Refused: a request from another site ({foreign}).")
        target = views.safe_next(fields.get("next"))
        operator = self.access.sign_in(fields.get("token", ""), fields.get("name", ""))
        if operator is None:
            error = (
                "Sign-in is off: the dashboard was started without tokens."
                if not self.access.login_enabled
                else "Wrong token (or, with a shared token, no name given)."
            )
            return self.page(request, "login.html", 403, next=target, error=error)
        base = views.base(request)
        response = RedirectResponse(base + target, 303)
        response.set_cookie(
            COOKIE,
            self.access.cookie(operator),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=views.over_https(request),
            path=base or "/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        fields = await self.form(request)
        if not self.access.csrf_ok(request.cookies.get(COOKIE), fields.get("csrf")):
            return self.denied(request, "Refused: the form's CSRF token is missing or wrong.")
        base = views.base(request)
        response = RedirectResponse(f"{base}/", 303)
        response.delete_cookie(COOKIE, path=base or "/")
        return response


def create_app(
    engine: Engine,
    *,
    access: Access | None = None,
    stats_every: float = 10.0,
    allowed_hosts: Sequence[str] | None = None,
) -> Any:
    """The dashboard of ``engine`` as an ASGI app; mount it in your own app with
    ``Mount("/jobs-admin", app=create_app(engine, access=...))``.

    ``access``: tokens, read-only and private modes (``engine.web.access.Access``); by
    default nobody can act (the pages are read-only). ``stats_every``: the whole-database
    stats (a scan: about a second at a million jobs) are recomputed in the background at
    most this often, while someone looks. ``allowed_hosts``: the Host names the dashboard
    answers to (others get 400): a page of another site that rebinds its name to this
    machine cannot read it (the command sets it; a host app mounting this has its own).
    Every response carries a content security policy and refuses to be framed."""
    dashboard = Dashboard(engine, access or Access(), stats_every)
    d = dashboard
    routes = [
        Route("/", d.overview),
        Route("/panel", d.panel),
        Route("/charts/{name}.svg", d.chart_svg),
        Route("/jobs", d.jobs),
        Route("/jobs/{job_id:int}", d.job),
        Route("/jobs/{job_id:int}/chart.svg", d.job_svg),
        Route("/jobs/{job_id:int}/{action:str}", d.job_action, methods=["POST"]),
        Route("/bulk", d.bulk_preview),
        Route("/bulk", d.bulk_apply, methods=["POST"]),
        Route("/bulk/runs/{run_id:str}", d.bulk_run),
        Route("/schedules", d.schedules),
        Route("/login", d.login_form),
        Route("/login", d.login, methods=["POST"]),
        Route("/logout", d.logout, methods=["POST"]),
        Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, exception_handlers={NoSchema: _no_schema})
    app.state.dashboard = dashboard
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return SecurityHeaders(app)


SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
        b"script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """An ASGI wrapper adding SECURITY_HEADERS to every HTTP response (no inline script
    runs, no other site frames a page, no response is sniffed as another type)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.state = app.state

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, with_headers)


async def _no_schema(request: Request, error: Exception) -> Response:
    text = html.escape(str(error))
    return HTMLResponse(
        f"<!doctype html><title>jobcharts</title><h1>No jobs here yet</h1><p>{text}</p>", 503
    )


__all__ = ["Dashboard", "create_app"]
