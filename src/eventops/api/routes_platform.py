"""Applied projects and what they declare: pipelines (with their step graph), deployments (with
traffic split, served version, latency and errors) and one monitor's history."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from eventops.api import platform
from eventops.api.auth import context_of, require
from eventops.api.pagination import Page, PageRequest, page_request, paginate
from eventops.errors import NotFound
from eventops.monitoring.monitors import list_checks

router = APIRouter(tags=["projects"], dependencies=[Depends(require("viewer"))])


@router.get("/api/projects", response_model=Page, summary="Applied projects and definitions")
def projects(request: Request, page: PageRequest = Depends(page_request)) -> Page:
    return paginate(platform.projects(context_of(request).store), page)


@router.get("/api/pipelines", response_model=Page, summary="Pipelines with run counts")
def pipelines(request: Request, page: PageRequest = Depends(page_request)) -> Page:
    return paginate(platform.pipelines(context_of(request).store), page)


@router.get("/api/pipelines/{name}", summary="One pipeline: step graph, triggers, options")
def pipeline(request: Request, name: str) -> dict[str, Any]:
    return platform.pipeline(context_of(request).store, name)


@router.get("/api/deployments", response_model=Page, summary="Deployments and their health")
async def deployments(request: Request, page: PageRequest = Depends(page_request)) -> Page:
    found = await run_in_threadpool(platform.deployments, context_of(request).store)
    return paginate(found, page)


@router.get("/api/deployments/{name}", summary="One deployment and its recent changes")
async def deployment(request: Request, name: str) -> dict[str, Any]:
    return await run_in_threadpool(platform.deployment, context_of(request).store, name)


@router.get("/api/monitors/{name}", summary="A monitor's definition and its value over time")
def monitor(request: Request, name: str, points: int = Query(200, ge=1, le=5000)) -> dict[str, Any]:
    store = context_of(request).store
    checks = list_checks(store, name, limit=points)
    definition = platform.monitors(store).get(name)
    if definition is None and not checks:
        raise NotFound(f"no monitor {name!r} was applied or checked", field="name", rule="exists")
    series = [
        {"time": c.window_end.isoformat(), "kind": c.kind, "value": c.value,
         "drifted": c.drifted, "degraded": c.degraded, "status": c.status, "rows": c.rows}
        for c in reversed(checks)
    ]  # fmt: skip
    return {"name": name, "definition": definition, "series": series}
