"""Pipeline runs: list, one run with its steps, its logs and its lineage; request a new run.

A request only records the run and its `pipeline.run.requested` event (`Runner.request`); a
worker (`eventops worker`) executes it, so the API never runs user code in its own process.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from eventops.api.audit import audit_event
from eventops.api.auth import context_of, require
from eventops.api.pagination import Page, PageRequest, page_request, paginate
from eventops.api.tokens import Principal
from eventops.pipelines.lineage import lineage_of_run
from eventops.pipelines.runs import RunView, get_run, list_runs
from eventops.store import add_event

router = APIRouter(tags=["runs"], dependencies=[Depends(require("viewer"))])


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def run_json(view: RunView, *, steps: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": view.id, "pipeline": view.pipeline, "status": view.status, "params": view.params,
        "trigger": view.trigger, "error": view.error, "worker": view.worker,
        "correlation_id": view.correlation_id, "created_at": _when(view.created_at),
        "started_at": _when(view.started_at), "finished_at": _when(view.finished_at),
    }  # fmt: skip
    if steps:
        out["steps"] = [
            {"name": s.name, "status": s.status, "attempts": s.attempts, "duration_s": s.duration,
             "cache_key": s.cache_key, "artifacts": s.artifacts,
             "metrics": [m.to_json() for m in s.metrics], "reads": s.reads, "error": s.error,
             "started_at": _when(s.started_at), "finished_at": _when(s.finished_at)}
            for s in view.steps
        ]  # fmt: skip
    return out


@router.get("/api/runs", response_model=Page, summary="Pipeline runs, newest first")
def runs(
    request: Request,
    pipeline: str | None = Query(None),
    page: PageRequest = Depends(page_request),
) -> Page:
    views = list_runs(context_of(request).store, pipeline, limit=page.end)
    return paginate([run_json(v, steps=False) for v in views], page)


@router.get("/api/runs/{run_id}", summary="One run with its steps")
def run(request: Request, run_id: str) -> dict[str, Any]:
    return run_json(get_run(context_of(request).store, run_id), steps=True)


@router.get("/api/runs/{run_id}/logs", summary="What each step of a run printed")
def run_logs(request: Request, run_id: str) -> dict[str, Any]:
    view = get_run(context_of(request).store, run_id)
    return {
        "run_id": view.id,
        "steps": [{"name": s.name, "status": s.status, "log": s.log or ""} for s in view.steps],
    }


@router.get("/api/runs/{run_id}/lineage", summary="What a run read, was caused by and produced")
def run_lineage(request: Request, run_id: str) -> dict[str, Any]:
    return lineage_of_run(context_of(request).store, run_id)


class RunRequest(BaseModel):
    params: dict[str, Any] = Field(default_factory=dict, description="The pipeline's parameters.")


@router.post("/api/pipelines/{name}/runs", status_code=202, summary="Request a run")
def request_run(
    request: Request,
    name: str,
    body: RunRequest | None = None,
    principal: Principal = Depends(require("operator")),
) -> dict[str, Any]:
    """Record the run (status `requested`) for a worker to execute; audited as
    `audit.run.requested`. The run row and its event commit in the runner's transaction, the
    audit event right after it (the runner owns that transaction)."""
    ctx = context_of(request)
    params = (body or RunRequest()).params
    run_id = ctx.runner().request(name, params, trigger=f"api:{principal.name}")
    with ctx.store.session() as session:
        add_event(
            session, audit_event(principal.name, "run", "requested", f"run/{run_id}", pipeline=name)
        )
    return {"run_id": run_id, "pipeline": name, "status": "requested"}
