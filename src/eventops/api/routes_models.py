"""Registered models and the decisions people make about them: promote, roll back, reject.

Each decision goes through `Registry` with the caller's token name as `actor`, and its audit
event shares the store transaction in which the registry records the decision (the alias move
in MLflow happens before that transaction, as it does for the CLI).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from eventops.api.audit import audit_event
from eventops.api.auth import context_of, require
from eventops.api.pagination import Page, PageRequest, page_request, paginate
from eventops.api.tokens import Principal
from eventops.store import add_event

router = APIRouter(prefix="/api/models", tags=["models"], dependencies=[Depends(require("viewer"))])
Operator = Depends(require("operator"))


class Promote(BaseModel):
    version: str = Field(..., min_length=1, max_length=64)
    reason: str | None = Field(None, max_length=2000)


class Reason(BaseModel):
    reason: str | None = Field(None, max_length=2000)


def _evidence(reason: str | None) -> dict[str, Any]:
    return {"reason": reason, "via": "api"} if reason else {"via": "api"}


@router.get("", response_model=Page, summary="Registered models")
def models(request: Request, page: PageRequest = Depends(page_request)) -> Page:
    summaries = context_of(request).registry().models()
    return paginate([s.to_json() for s in summaries], page)


@router.get("/{name}", summary="One model: versions, aliases, decisions")
def model(request: Request, name: str) -> dict[str, Any]:
    registry = context_of(request).registry()
    out: dict[str, Any] = registry.model(name).to_json()
    out["decisions"] = [d.to_json() for d in registry.decisions(name, limit=50)]
    return out


@router.post("/{name}/promote", summary="Make a version the champion")
def promote(
    request: Request, name: str, body: Promote, principal: Principal = Operator
) -> dict[str, Any]:
    ctx = context_of(request)
    registry = ctx.registry()
    with ctx.store.session() as session:
        decision = registry.promote(
            name,
            body.version,
            actor=principal.name,
            evidence=_evidence(body.reason),
            session=session,
        )
        add_event(
            session,
            audit_event(principal.name, "model", "promoted", f"model/{name}/{decision.version}"),
        )
    result: dict[str, Any] = decision.to_json()
    return result


@router.post("/{name}/rollback", summary="Point the champion back at the previous version")
def rollback(
    request: Request, name: str, body: Reason | None = None, principal: Principal = Operator
) -> dict[str, Any]:
    ctx = context_of(request)
    registry = ctx.registry()
    reason = body.reason if body else None
    with ctx.store.session() as session:
        decision = registry.rollback(
            name, actor=principal.name, evidence=_evidence(reason), session=session
        )
        add_event(
            session,
            audit_event(principal.name, "model", "rolled_back", f"model/{name}/{decision.version}"),
        )
    result: dict[str, Any] = decision.to_json()
    return result


@router.post("/{name}/versions/{version}/reject", summary="Refuse a version")
def reject(
    request: Request,
    name: str,
    version: str,
    body: Reason | None = None,
    principal: Principal = Operator,
) -> dict[str, Any]:
    ctx = context_of(request)
    registry = ctx.registry()
    reason = body.reason if body else None
    with ctx.store.session() as session:
        decision = registry.reject(
            name, version, actor=principal.name, evidence=_evidence(reason), session=session
        )
        add_event(
            session,
            audit_event(principal.name, "model", "rejected", f"model/{name}/{decision.version}"),
        )
    result: dict[str, Any] = decision.to_json()
    return result
