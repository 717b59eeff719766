"""Datasets in the lake: the list with their sizes, one dataset's schema versions, recent
batches and latest statistics (the same facts as `eventops datasets show`), and ingestion of
records as a batch."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from eventops.api.audit import audit_event
from eventops.api.auth import context_of, require
from eventops.api.pagination import Page, PageRequest, page_request, paginate
from eventops.api.tokens import Principal
from eventops.errors import ValidationError
from eventops.ingest import records_to_table
from eventops.ingest.http import check_name, content_kind, parse_records, result_body
from eventops.lake.catalog import Lake
from eventops.store import add_event

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


_RECORDS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "array", "items": {"type": "object"}, "maxItems": 100_000}
            },
            "application/x-ndjson": {"schema": {"type": "string"}},
        },
    }
}
_WRITER = threading.Lock()  # SQLite has one writer: queue batches here, not in its busy handler


@router.post(
    "/{name}/records",
    status_code=201,
    summary="Ingest records as one batch (validated; bad rows quarantined)",
    openapi_extra=_RECORDS_BODY,
)
async def post_records(
    request: Request, name: str, principal: Principal = Depends(require("operator"))
) -> dict[str, Any]:
    """The same path as `eventops ingest serve`: the batch is validated against the dataset's
    contract, bad rows go to quarantine, `dataset.batch.ingested` leaves through the outbox (a
    worker's relay publishes it). `Idempotency-Key` makes a retried request a no-op. Audited as
    `audit.dataset.ingested` right after the batch's own transaction."""
    check_name(name)
    kind = content_kind(request.headers.get("content-type"))
    batch_id = None
    if key := request.headers.get("idempotency-key"):
        batch_id = hashlib.sha256(f"api\0{name}\0{key}".encode()).hexdigest()[:32]
    body = await request.body()
    ctx = context_of(request)

    def ingest() -> dict[str, Any]:
        table = records_to_table(parse_records(body, kind))
        lake = ctx.lake()
        lock = _WRITER if lake.store.dialect == "sqlite" else contextlib.nullcontext()
        with lock:
            result = lake.commit_batch(
                name, table, source=f"api:{principal.name}", batch_id=batch_id
            )
        if result.rejected_batch:
            kept = (
                f"; kept in quarantine at {result.quarantine_uri}" if result.quarantine_uri else ""
            )
            raise ValidationError(
                f"{result.reason or 'the batch was rejected'}{kept}",
                field="records",
                rule="contract",
            )
        with ctx.store.session() as session:
            event = audit_event(
                principal.name, "dataset", "ingested", f"dataset/{name}",
                batch_id=result.batch_id, rows=result.rows_accepted, duplicate=result.duplicate,
            )  # fmt: skip
            add_event(session, event)
        return result_body(result)

    return await run_in_threadpool(ingest)
