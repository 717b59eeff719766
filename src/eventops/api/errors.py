"""One error body for every failure: ``{"error": {"field", "rule", "message"}}``.

EventOps errors already carry the field and the rule (`eventops.errors`); here they are mapped
once to HTTP statuses, and FastAPI's own failures (request validation, unknown routes, auth)
are reshaped to the same body so a client parses one format.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from eventops.errors import (
    BackendUnavailable,
    ConfigError,
    EventOpsError,
    NotFound,
    ValidationError,
)


class ErrorDetail(BaseModel):
    field: str | None = Field(None, description="What was wrong: a parameter, a body field...")
    rule: str | None = Field(None, description="The rule broken; stable, for clients to switch on")
    message: str
    details: list[dict[str, Any]] | None = Field(None, description="Every validation failure")


class ErrorBody(BaseModel):
    """The body of every error the API answers."""

    error: ErrorDetail


_WHEN = {
    400: "The server's configuration is invalid",
    401: "No token, or an unknown, expired or revoked one",
    403: "The token's role is too low",
    404: "No such thing",
    413: "The body is too large",
    422: "The request breaks a rule (the field and the rule are named)",
    429: "Too many requests for this token (see Retry-After)",
    503: "A backend (bus, store, tracking server) is unavailable",
}
# Documented on every operation, so clients and schema checks know the error body.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _WHEN.items()
}


class ApiError(StarletteHTTPException):
    """An HTTP failure raised by the API itself, with a rule a client can switch on."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        rule: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, headers=headers)
        self.rule = rule
        self.field = field


def error_body(
    message: str, *, field: str | None = None, rule: str | None = None
) -> dict[str, Any]:
    return {"error": {"field": field, "rule": rule, "message": message}}


def status_of(exc: EventOpsError) -> int:
    """ConfigError is a ValidationError but means "the server's setup is wrong": 400, not 422."""
    if isinstance(exc, ConfigError):
        return 400
    if isinstance(exc, ValidationError):
        return 422
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, BackendUnavailable):
        return 503
    return exc.http_status


async def eventops_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EventOpsError)
    body = error_body(exc.message, field=exc.field, rule=exc.rule or type(exc).__name__)
    return JSONResponse(body, status_code=status_of(exc))


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid", "type": "invalid"}
    where = ".".join(str(part) for part in first.get("loc", ())[1:] or first.get("loc", ()))
    body = error_body(str(first.get("msg")), field=where or None, rule=str(first.get("type")))
    body["error"]["details"] = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg")), "type": e.get("type")}
        for e in exc.errors()
    ]
    return JSONResponse(body, status_code=422)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    rule = getattr(exc, "rule", None) or {404: "route", 405: "method"}.get(exc.status_code, "http")
    field = getattr(exc, "field", None)
    return JSONResponse(
        error_body(str(exc.detail), field=field, rule=rule),
        status_code=exc.status_code,
        headers=exc.headers,
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(EventOpsError, eventops_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
