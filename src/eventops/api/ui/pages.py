"""The web UI: server-rendered pages over the same functions the REST API calls.

Why server-rendered HTML (Jinja2 templates, one stylesheet, one small script for the live feed)
and not a single-page app: nothing to build at install, nothing fetched from a CDN, and a page
is a template plus the dict the matching API route returns, so whoever maintains it needs no
JavaScript framework. The UI only reads; changes go through the API or the CLI with a token
(the cookie the UI keeps is honoured for reads only, see `api.auth`).

Signing in stores a token (an EventOps token or an OIDC JWT) in an HttpOnly, SameSite=Strict
cookie. With auth off (`--no-auth`, loopback only) pages open without it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from eventops.api import platform
from eventops.api.auth import SESSION_COOKIE, _authenticate, _check_credential, context_of
from eventops.api.context import ApiContext
from eventops.api.errors import ApiError, eventops_error, http_error, status_of
from eventops.api.routes_datasets import describe
from eventops.api.routes_runs import run_json
from eventops.api.tokens import Principal
from eventops.api.ui import svg
from eventops.errors import EventOpsError
from eventops.events.envelope import Event
from eventops.monitoring.monitors import latest_checks, list_checks
from eventops.pipelines.lineage import lineage_of_run
from eventops.pipelines.runs import get_run, list_runs
from eventops.store import OutboxEntry
from eventops.store.alerts import alert_state_rows

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
templates.env.globals.update(
    status_class=svg.status_class, split_bar=svg.split_bar, step_graph=svg.step_graph
)
router = APIRouter(prefix="/ui", include_in_schema=False)
SESSION_SECONDS = 8 * 3600
MAX_LOGIN_BODY = 16 * 1024


class LoginRequired(StarletteHTTPException):
    """Raised by a page without a valid credential: answered by a redirect to the sign-in."""

    def __init__(self, path: str) -> None:
        super().__init__(303)
        self.path = path


async def viewer(request: Request) -> Principal:
    try:
        principal = await _authenticate(request, None)
    except ApiError as exc:
        if exc.status_code == 401:
            raise LoginRequired(request.url.path) from None
        raise
    if not principal.allows("viewer"):  # an OIDC user without a role gets 403 from _check
        raise ApiError(403, "this needs the viewer role", rule="role")
    return principal


def _safe_next(path: str | None) -> str:
    """Only a path of this UI: never an absolute URL (no open redirect)."""
    if path and path.startswith("/ui") and not path.startswith("//") and "\\" not in path:
        return path
    return "/ui/"


def page(
    request: Request, template: str, principal: Principal | None, **values: Any
) -> HTMLResponse:
    ctx: ApiContext = context_of(request)
    return templates.TemplateResponse(
        request,
        template,
        {"principal": principal, "auth": ctx.auth, "nav": template.split(".")[0], **values},
    )


async def _render(
    request: Request, template: str, load: Callable[[ApiContext], dict[str, Any]]
) -> HTMLResponse:
    principal = await viewer(request)
    values = await run_in_threadpool(load, context_of(request))
    return page(request, template, principal, **values)


# ------------------------------------------------------------------ sign in / out
@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    return page(request, "login.html", None, next=_safe_next(next), error=None)


@router.post("/login", response_model=None)
async def login(request: Request) -> Response:
    body = await request.body()
    if len(body) > MAX_LOGIN_BODY:
        raise ApiError(413, "the form is too large", rule="max-size")
    form = parse_qs(body.decode("utf-8", "replace"))
    token = (form.get("token") or [""])[0].strip()
    target = _safe_next((form.get("next") or [""])[0])
    ctx = context_of(request)
    client = request.client.host if request.client else "unknown"
    wait = request.app.state.limiter.take(f"login:{client}")
    if wait is not None:
        raise ApiError(429, "too many sign-in attempts; wait a moment", rule="rate-limit")
    error = None
    if not token:
        error = "paste an API token (eo_...) or an OIDC token"
    else:
        try:
            await run_in_threadpool(_check_credential, ctx, token)
        except ApiError as exc:
            error = str(exc.detail)
    if error is not None:
        response = page(request, "login.html", None, next=target, error=error)
        response.status_code = 401
        return response
    redirect = RedirectResponse(target, status_code=303)
    redirect.set_cookie(
        SESSION_COOKIE, token, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
        secure=request.url.scheme == "https", path="/",
    )  # fmt: skip
    return redirect


@router.post("/logout", response_model=None)
def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ------------------------------------------------------------------ pages
def _recent_events(ctx: ApiContext, limit: int, type_prefix: str | None = None) -> list[Any]:
    query = select(OutboxEntry).order_by(OutboxEntry.id.desc()).limit(limit)
    if type_prefix:
        query = query.where(OutboxEntry.type.startswith(type_prefix, autoescape=True))
    with ctx.store.session() as session:
        return [Event.from_json(row.payload).to_dict() for row in session.scalars(query)]


def _overview(ctx: ApiContext) -> dict[str, Any]:
    lake = ctx.lake()
    alerts = alert_state_rows(ctx.store)
    return {
        "counts": {
            "datasets": len(lake.names()),
            "pipelines": len(platform.pipelines(ctx.store)),
            "runs": len(list_runs(ctx.store, None, limit=10_000)),
            "deployments": len(platform.deployments(ctx.store, live=False)),
            "monitors": len(latest_checks(ctx.store)),
            "alerts firing": sum(1 for a in alerts if a.status == "firing"),
        },
        "events": _recent_events(ctx, 30),
    }


@router.get("/", response_class=HTMLResponse)
async def overview(request: Request) -> HTMLResponse:
    return await _render(request, "overview.html", _overview)


@router.get("/events", response_class=HTMLResponse)
async def events(request: Request, type: str | None = None) -> HTMLResponse:
    return await _render(
        request,
        "events.html",
        lambda ctx: {"events": _recent_events(ctx, 200, type), "type": type or ""},
    )


@router.get("/pipelines", response_class=HTMLResponse)
async def pipelines(request: Request) -> HTMLResponse:
    return await _render(
        request, "pipelines.html", lambda ctx: {"pipelines": platform.pipelines(ctx.store)}
    )


@router.get("/pipelines/{name}", response_class=HTMLResponse)
async def pipeline(request: Request, name: str) -> HTMLResponse:
    def load(ctx: ApiContext) -> dict[str, Any]:
        definition = platform.pipeline(ctx.store, name)
        runs = [run_json(v, steps=False) for v in list_runs(ctx.store, name, limit=50)]
        return {"pipeline": definition, "runs": runs}

    return await _render(request, "pipeline.html", load)


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run(request: Request, run_id: str) -> HTMLResponse:
    def load(ctx: ApiContext) -> dict[str, Any]:
        view = get_run(ctx.store, run_id)
        declared = platform.declared(ctx.store, "pipelines").get(view.pipeline)
        graph = (declared or {}).get("steps") or [
            {"name": s.name, "upstreams": [view.steps[i - 1].name] if i else []}
            for i, s in enumerate(view.steps)
        ]
        return {
            "run": run_json(view, steps=True),
            "graph": graph,
            "statuses": {s.name: s.status for s in view.steps},
            "logs": {s.name: s.log or "" for s in view.steps},
            "lineage": lineage_of_run(ctx.store, run_id),
        }

    return await _render(request, "run.html", load)


@router.get("/datasets", response_class=HTMLResponse)
async def datasets(request: Request) -> HTMLResponse:
    def load(ctx: ApiContext) -> dict[str, Any]:
        lake = ctx.lake()
        return {"datasets": [lake.summary(n) for n in lake.names()]}

    return await _render(request, "datasets.html", load)


@router.get("/datasets/{name}", response_class=HTMLResponse)
async def dataset(request: Request, name: str) -> HTMLResponse:
    return await _render(
        request, "dataset.html", lambda ctx: {"dataset": describe(ctx.lake(), name, 50)}
    )


@router.get("/models", response_class=HTMLResponse)
async def models(request: Request) -> HTMLResponse:
    return await _render(
        request,
        "models.html",
        lambda ctx: {"models": [m.to_json() for m in ctx.registry().models()]},
    )


@router.get("/models/{name}", response_class=HTMLResponse)
async def model(request: Request, name: str) -> HTMLResponse:
    def load(ctx: ApiContext) -> dict[str, Any]:
        registry = ctx.registry()
        found = registry.model(name).to_json()
        metrics = sorted({k for v in found["versions"] for k in v["metrics"]})
        decisions = [d.to_json() for d in registry.decisions(name, limit=50)]
        return {"model": found, "metrics": metrics, "decisions": decisions}

    return await _render(request, "model.html", load)


@router.get("/deployments", response_class=HTMLResponse)
async def deployments(request: Request) -> HTMLResponse:
    return await _render(
        request, "deployments.html", lambda ctx: {"deployments": platform.deployments(ctx.store)}
    )


@router.get("/deployments/{name}", response_class=HTMLResponse)
async def deployment(request: Request, name: str) -> HTMLResponse:
    return await _render(
        request, "deployment.html", lambda ctx: {"d": platform.deployment(ctx.store, name)}
    )


@router.get("/monitors", response_class=HTMLResponse)
async def monitors(request: Request) -> HTMLResponse:
    def load(ctx: ApiContext) -> dict[str, Any]:
        checks = [c.to_dict() for c in latest_checks(ctx.store)]
        declared = platform.monitors(ctx.store)
        seen = {c["monitor"] for c in checks}
        waiting = [m for name, m in sorted(declared.items()) if name not in seen]
        return {"checks": checks, "waiting": waiting}

    return await _render(request, "monitors.html", load)


@router.get("/monitors/{name}", response_class=HTMLResponse)
async def monitor(request: Request, name: str) -> HTMLResponse:
    def load(ctx: ApiContext) -> dict[str, Any]:
        checks = list_checks(ctx.store, name, limit=200)
        definition = platform.monitors(ctx.store).get(name)
        charts = {}
        for kind in sorted({c.kind for c in checks}):
            points = [
                svg.Point(c.window_end.strftime("%m-%d %H:%M:%S"), c.value, c.drifted or c.degraded)
                for c in reversed(checks)
                if c.kind == kind and c.value is not None
            ]
            label = "share of features drifted" if kind == "drift" else f"{kind} value"
            charts[kind] = svg.line_chart(points, y_label=label)
        return {
            "name": name,
            "definition": definition,
            "charts": charts,
            "checks": [c.to_dict() for c in checks[:50]],
        }

    return await _render(request, "monitor.html", load)


@router.get("/alerts", response_class=HTMLResponse)
async def alerts(request: Request) -> HTMLResponse:
    def load(ctx: ApiContext) -> dict[str, Any]:
        return {"alerts": alert_state_rows(ctx.store), "rules": platform.alert_rules(ctx.store)}

    return await _render(request, "alerts.html", load)


def install(app: FastAPI) -> None:
    """Mount the pages, the static files and the sign-in redirect on the API app."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="ui-static")

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(f"/ui/login?next={quote(exc.path)}", status_code=303)

    @app.exception_handler(EventOpsError)
    async def eventops_page_error(request: Request, exc: EventOpsError) -> Response:
        if _is_page(request):
            return render_error(request, exc.message, status_of(exc))
        return await eventops_error(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_page_error(request: Request, exc: StarletteHTTPException) -> Response:
        if _is_page(request) and exc.status_code != 401:
            return render_error(request, str(exc.detail), exc.status_code)
        return await http_error(request, exc)

    @app.get("/", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/ui/", status_code=307)


def _is_page(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/ui/") and not path.startswith("/ui/static/")


def render_error(request: Request, message: str, status: int) -> HTMLResponse:
    """An error on a page, as a page (the API answers JSON for the same error)."""
    response = page(request, "error.html", None, status=status, message=message)
    response.status_code = status
    return response
