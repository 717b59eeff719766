"""HTTP ingestion: `POST /datasets/{name}/records` with a JSON array or NDJSON body.

Why it is shaped this way:

* The request is checked cheaply before any work: token, dataset name, content type, then the
  size (from Content-Length before reading, and again while reading, since a client can lie or
  stream without a length). A rejected request costs nothing beyond its headers.
* Parsing, the Arrow conversion and `Lake.commit_batch` (Parquet writing, statistics, the store
  transaction) are CPU and disk work: they run in the worker thread pool so one large batch
  never stalls the event loop, health checks or other uploads.
* Row-level problems are the lake's business (bad rows go to quarantine and are counted in the
  answer); request-level problems are answered at once with 4xx and an error naming the field
  and the rule, because the client still holds the data and can fix and resend it.
* On a SQLite store, commits (and relays) from concurrent requests take turns on a lock in the
  app: SQLite has one writer anyway, and its busy handler waits in coarse sleeps, which tripled
  the p99 latency in `benchmarks/bench_ingest_http.py`. Parsing still runs concurrently.
* After a commit the outbox is relayed at once when a relay is given, so `dataset.batch.ingested`
  reaches the bus with no polling delay. A relay failure does not fail the request: the batch and
  its events are committed, and any later relay publishes them.
* An optional `Idempotency-Key` header makes the batch id deterministic, so a client that retries
  after a lost answer does not ingest the batch twice (the answer then says `duplicate: true`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from eventops.errors import EventOpsError
from eventops.ingest import record_error, records_to_table
from eventops.lake import IngestResult, Lake
from eventops.lake.spec import NAME_PATTERN
from eventops.store import OutboxRelay

log = logging.getLogger(__name__)

MiB = 1024 * 1024
DEFAULT_MAX_BODY = 32 * MiB
SOURCE = "http"
JSON_TYPES = frozenset({"application/json"})
NDJSON_TYPES = frozenset({"application/x-ndjson", "application/ndjson", "application/jsonl"})
Kind = Literal["json", "ndjson"]


class RequestError(EventOpsError):
    """A request-level problem, answered with its own HTTP status (400, 401, 413, 415...)."""

    def __init__(self, status: int, message: str, *, field: str, rule: str) -> None:
        super().__init__(message, field=field, rule=rule)
        self.http_status = status


def error_body(exc: EventOpsError) -> dict[str, Any]:
    return {"error": {"field": exc.field, "rule": exc.rule, "message": exc.message}}


def bad(message: str, field: str, rule: str) -> RequestError:
    return RequestError(400, message, field=field, rule=rule)


def parse_records(body: bytes, kind: Kind) -> list[dict[str, Any]]:
    """The records of a body, or a RequestError naming the line or index that is wrong."""
    if not body.strip():
        raise bad("the body is empty; send records", "body", "non-empty")
    if kind == "ndjson":
        records: list[Any] = []
        for number, line in enumerate(body.split(b"\n"), start=1):
            if not line.strip():
                continue
            where = f"line {number}"
            try:
                value = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise bad(f"{where}: not valid JSON ({_why(exc)})", where, "json") from None
            if (problem := record_error(value)) is not None:
                raise bad(f"{where}: the record {problem}", where, "object")
            records.append(value)
        return records
    try:
        value = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(f"not valid JSON ({_why(exc)})", "body", "json") from None
    if not isinstance(value, list):
        raise bad("the body must be a JSON array of objects", "body", "array")
    if not value:
        raise bad("the array is empty; send records", "body", "non-empty")
    for index, item in enumerate(value):
        if (problem := record_error(item)) is not None:
            raise bad(f"records[{index}] {problem}", f"records[{index}]", "object")
    return value


def _why(exc: ValueError) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    return f"not UTF-8: {exc.reason}" if isinstance(exc, UnicodeDecodeError) else str(exc)


def content_kind(header: str | None) -> Kind:
    media = (header or "").split(";", 1)[0].strip().lower()
    if media in JSON_TYPES:
        return "json"
    if media in NDJSON_TYPES:
        return "ndjson"
    raise RequestError(
        415, f"unsupported content type {media or '(none)'!r}; send application/json "
        "(an array of objects) or application/x-ndjson (one object per line)",
        field="content-type", rule="media-type",
    )  # fmt: skip


def check_name(name: str) -> None:
    if not re.fullmatch(NAME_PATTERN, name):
        raise RequestError(
            422, f"invalid dataset name {name!r}: lowercase letters, digits and '_', starting "
            "with a letter, at most 128 characters", field="name", rule="pattern",
        )  # fmt: skip


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    too_large = f"the body is larger than the limit of {limit:,} bytes; split it into batches"
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.strip().isascii() and declared.strip().isdigit()):
            raise bad("Content-Length is not a number", "content-length", "integer")
        if int(declared) > limit:
            raise RequestError(413, too_large, field="body", rule="max-size")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise RequestError(413, too_large, field="body", rule="max-size")
    return bytes(body)


def result_body(result: IngestResult) -> dict[str, Any]:
    return {
        "dataset": result.dataset, "batch_id": result.batch_id,
        "rows_accepted": result.rows_accepted, "rows_rejected": result.rows_rejected,
        "schema_version": result.schema_version, "uri": result.uri,
        "quarantine_uri": result.quarantine_uri, "reason": result.reason, "duplicate": result.duplicate,
    }  # fmt: skip


def bearer_auth(token: str) -> Callable[[Request], Awaitable[None]]:
    """A dependency that admits `Authorization: Bearer <token>` only (constant-time compare)."""
    expected = token.encode()

    async def check(request: Request) -> None:
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            message = "send Authorization: Bearer <token>"
            raise RequestError(401, message, field="authorization", rule="bearer-token")
        if not hmac.compare_digest(given.strip().encode(), expected):
            message = "the token is not valid"
            raise RequestError(403, message, field="authorization", rule="valid-token")

    return check


def create_ingest_app(
    lake: Lake,
    *,
    relay: OutboxRelay | None = None,
    token: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY,
) -> FastAPI:
    """The ingestion API over `lake`; with `token`, every request must carry it as a bearer token."""
    if max_body_bytes < 1:
        raise ValueError("max_body_bytes must be positive")
    deps = [Depends(bearer_auth(token))] if token else []
    app = FastAPI(title="EventOps ingest", dependencies=deps)

    @app.exception_handler(EventOpsError)
    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EventOpsError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
        return JSONResponse(error_body(exc), exc.http_status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        body = {"error": {"field": None, "rule": "http", "message": str(exc.detail)}}
        return JSONResponse(body, exc.status_code, headers=exc.headers)

    # SQLite has one writer: queue here rather than in its busy handler (see the docstring).
    writer = threading.Lock() if lake.store.dialect == "sqlite" else contextlib.nullcontext()

    def ingest(name: str, body: bytes, kind: Kind, batch_id: str | None) -> IngestResult:
        table = records_to_table(parse_records(body, kind))
        with writer:
            result = lake.commit_batch(name, table, source=SOURCE, batch_id=batch_id)
            if relay is not None and result.events:
                try:
                    relay.relay_once()
                except Exception as exc:  # the events stay in the outbox for the next relay
                    log.warning("outbox relay after batch %s failed: %s", result.batch_id, exc)
        log.info(
            "dataset %s: batch %s, %d row(s) accepted, %d rejected%s", name, result.batch_id,
            result.rows_accepted, result.rows_rejected, " (duplicate)" if result.duplicate else "",
        )  # fmt: skip
        return result

    @app.post("/datasets/{name}/records", status_code=201)
    async def post_records(name: str, request: Request) -> JSONResponse:
        """Commit the records as one batch; bad rows are quarantined and counted."""
        check_name(name)
        kind = content_kind(request.headers.get("content-type"))
        batch_id = None
        if key := request.headers.get("idempotency-key"):
            batch_id = hashlib.sha256(f"{SOURCE}\0{name}\0{key}".encode()).hexdigest()[:32]
        body = await read_body(request, max_body_bytes)
        result = await run_in_threadpool(ingest, name, body, kind, batch_id)
        status = 422 if result.rejected_batch else 200 if result.duplicate else 201
        return JSONResponse(result_body(result), status)

    @app.get("/datasets/{name}")
    def get_dataset(name: str) -> dict[str, Any]:
        """The dataset's catalog summary: schema version, batches, rows, rejected rows."""
        check_name(name)
        return lake.summary(name)

    @app.get("/health")
    def health() -> dict[str, str]:
        """Ready when the catalog's store answers (503 otherwise)."""
        lake.store.check()
        return {"status": "ok"}

    return app


__all__ = ["DEFAULT_MAX_BODY", "RequestError", "create_ingest_app", "parse_records"]
