"""Datasets in the lake: the list with their sizes, and one dataset's schema versions,
recent batches and latest statistics (the same facts as `eventops datasets show`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request

from eventops.api.auth import context_of, require
from eventops.api.pagination import Page, PageRequest, page_request, paginate
from eventops.lake.catalog import Lake

router = APIRouter(
    prefix="/api/datasets", tags=["datasets"], dependencies=[Depends(require("viewer"))]
)


@router.get("", response_model=Page, summary="Datasets with their sizes")
def list_datasets(request: Request, page: PageRequest = Depends(page_request)) -> Page:
    lake = context_of(request).lake()
    names = lake.names()
    shown = paginate([{"name": n} for n in names], page)
    shown.items = [lake.summary(item["name"]) for item in shown.items]
    return shown


def describe(lake: Lake, name: str, last: int) -> dict[str, Any]:
    batches = lake.batches(name)
    versions = [
        {"version": v.version, "declared": v.declared, "created_at": v.created_at.isoformat(),
         "columns": v.columns, "changes": v.changes}
        for v in lake.versions(name)
    ]  # fmt: skip
    recent = [
        {"batch_id": b.id, "version": b.version, "rows": b.rows, "size_bytes": b.size_bytes,
         "source": b.source, "lineage": b.lineage or [], "created_at": b.created_at.isoformat()}
        for b in (batches[-last:] if last else [])
    ]  # fmt: skip
    latest = batches[-1] if batches else None
    return {
        **lake.summary(name),
        "spec": lake.spec(name).model_dump(mode="json"),
        "schema_versions": versions,
        "batches": recent,
        "latest_batch": latest.id if latest else None,
        "latest_stats": latest.stats.get("columns", {}) if latest else {},
    }


@router.get("/{name}", summary="One dataset: schema versions, recent batches, statistics")
def get_dataset(
    request: Request,
    name: str,
    batches: int = Query(20, ge=0, le=1000, description="How many recent batches to show."),
) -> dict[str, Any]:
    return describe(context_of(request).lake(), name, batches)
