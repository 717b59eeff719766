"""Monitors (the newest check of each), one monitor's checks, and the state of every alert."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from eventops.api.auth import context_of, require
from eventops.api.pagination import Page, PageRequest, page_request, paginate
from eventops.events.envelope import format_time
from eventops.monitoring.monitors import latest_checks, list_checks
from eventops.store.alerts import alert_state_rows

router = APIRouter(tags=["monitoring"], dependencies=[Depends(require("viewer"))])


@router.get("/api/monitors", response_model=Page, summary="The newest check of every monitor")
def monitors(request: Request, page: PageRequest = Depends(page_request)) -> Page:
    checks = latest_checks(context_of(request).store)
    return paginate([c.to_dict() for c in checks], page)


@router.get("/api/monitors/{name}/checks", response_model=Page, summary="A monitor's checks")
def checks(request: Request, name: str, page: PageRequest = Depends(page_request)) -> Page:
    found = list_checks(context_of(request).store, name, limit=page.end)
    return paginate([c.to_dict() for c in found], page)


@router.get("/api/alerts", response_model=Page, summary="Every alert: firing or resolved")
def alerts(request: Request, page: PageRequest = Depends(page_request)) -> Page:
    rows = alert_state_rows(context_of(request).store)
    items = [
        {"rule": r.rule, "group": r.group_key, "status": r.status, "severity": r.severity,
         "since": format_time(r.since), "count": r.count, "summary": r.summary,
         "deduplicated": r.deduplicated, "notifications": r.notifications,
         "delivery_pending": r.delivery_pending, "last_delivery_error": r.last_delivery_error}
        for r in rows
    ]  # fmt: skip
    return paginate(items, page)
