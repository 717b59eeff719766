"""Events: a page of recent ones, and a live Server-Sent Events stream of new ones.

The list reads the outbox table (every event EventOps itself produced, published or still
pending), newest first, with the outbox id as a stable cursor. The stream tails the bus from
its end (`start="latest"`) with a read-only consumer (no group, nothing committed), so it also
shows events of foreign producers and never disturbs a consumer group.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy import select

from eventops.api.auth import context_of, require
from eventops.api.pagination import Page, PageRequest, cursor_number, page_request
from eventops.events.bus import open_configured_bus, topics_for_patterns, type_matches
from eventops.events.envelope import Event
from eventops.store import OutboxEntry

router = APIRouter(prefix="/api/events", tags=["events"], dependencies=[Depends(require("viewer"))])
KEEPALIVE_SECONDS = 15.0


def _row_json(row: OutboxEntry) -> dict[str, Any]:
    item: dict[str, Any] = Event.from_json(row.payload).to_dict()
    item["published"] = row.published_at is not None
    return item


@router.get("", response_model=Page, summary="Recent events, newest first")
def list_events(
    request: Request,
    type: str | None = Query(None, description="An event type, or a prefix ending in `*`."),
    subject: str | None = Query(None),
    page: PageRequest = Depends(page_request),
) -> Page:
    ctx = context_of(request)
    query = select(OutboxEntry).order_by(OutboxEntry.id.desc()).limit(page.limit + 1)
    if page.cursor:
        query = query.where(OutboxEntry.id < cursor_number(page.cursor))
    if type:
        if type.endswith("*"):
            query = query.where(OutboxEntry.type.startswith(type[:-1], autoescape=True))
        else:
            query = query.where(OutboxEntry.type == type)
    if subject:
        query = query.where(OutboxEntry.subject == subject)
    with ctx.store.session() as session:
        rows = list(session.scalars(query))
        items = [_row_json(row) for row in rows[: page.limit]]
        last = rows[page.limit - 1].id if len(rows) > page.limit else None
    return Page(items=items, next=str(last) if last is not None else None)


def _sse(event: Event, *, named: bool = True) -> str:
    name = f"event: {event.type}\n" if named else ""
    return f"id: {event.id}\n{name}data: {json.dumps(event.to_dict())}\n\n"


@router.get(
    "/stream",
    summary="New events as Server-Sent Events",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def stream_events(
    request: Request,
    type: list[str] | None = Query(None, description="Type patterns: `dataset.*`, ..."),
    max_events: int | None = Query(None, ge=1, le=100_000, description="End after this many."),
    timeout: float = Query(300.0, gt=0, le=3600, description="End after this many seconds."),
    named: bool = Query(
        True,
        description="Send each event's type as the SSE event name; false sends plain messages "
        "(what a browser's EventSource.onmessage receives).",
    ),
) -> StreamingResponse:
    """Streams until the client disconnects, `max_events` were sent or `timeout` passed (a
    client reconnects for more), so no request holds a bus consumer forever."""
    ctx = context_of(request)
    patterns = list(type or [])
    bus = open_configured_bus(ctx.settings)
    consumer = bus.consumer(None, topics_for_patterns(patterns, bus.prefix), start="latest")

    async def body() -> AsyncIterator[str]:
        sent = 0
        deadline = time.monotonic() + timeout
        last_write = time.monotonic()
        try:
            # The first poll fixes the consumer's position at the bus's end: what is published
            # after it is delivered.
            first = await run_in_threadpool(consumer.poll, 0.0)
            ctx.mark_stream_ready()
            records = first
            yield ": connected\n\n"
            while time.monotonic() < deadline:
                for record in records:
                    if record.event is not None and type_matches(record.event.type, patterns):
                        yield _sse(record.event, named=named)
                        last_write = time.monotonic()
                        sent += 1
                        if max_events is not None and sent >= max_events:
                            return
                if await request.is_disconnected():
                    return
                if time.monotonic() - last_write > KEEPALIVE_SECONDS:
                    yield ": keepalive\n\n"
                    last_write = time.monotonic()
                records = await run_in_threadpool(consumer.poll, ctx.stream_poll)
                await asyncio.sleep(0)
        finally:
            await run_in_threadpool(consumer.close)
            await run_in_threadpool(bus.close)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
