"""Bearer-token authentication and roles, as FastAPI dependencies.

`require(role)` authenticates once per request (the principal is cached on `request.state`, so
a router-wide viewer check and a route's operator check cost one lookup and one rate-limit
token), then checks the role: 401 with ``WWW-Authenticate: Bearer`` for a missing or bad token,
403 for a valid token whose role is too low, 429 when the token is over its rate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from eventops.api.context import ApiContext
from eventops.api.errors import ApiError
from eventops.api.limits import RateLimiter, retry_after
from eventops.api.tokens import Principal, Role, verify

LOCAL = Principal("local", "local", "admin")  # who calls when auth is off
bearer = HTTPBearer(auto_error=False, description="An EventOps API token: eo_...")
CHALLENGE = {"WWW-Authenticate": "Bearer"}


def context_of(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.context
    return ctx


def limiter_of(request: Request) -> RateLimiter:
    limiter: RateLimiter = request.app.state.limiter
    return limiter


async def _authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None
) -> Principal:
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    ctx = context_of(request)
    if not ctx.auth:
        principal = LOCAL
    else:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(
                401, "send Authorization: Bearer <token>", rule="authenticated", headers=CHALLENGE
            )
        found = await run_in_threadpool(verify, ctx.store, credentials.credentials)
        if found is None:
            raise ApiError(
                401, "the token is unknown, expired or revoked", rule="valid-token",
                headers=CHALLENGE,
            )  # fmt: skip
        principal = found
    wait = limiter_of(request).take(principal.token_id)
    if wait is not None:
        raise ApiError(
            429, "too many requests for this token; slow down", rule="rate-limit",
            headers={"Retry-After": retry_after(wait)},
        )  # fmt: skip
    request.state.principal = principal
    return principal


def require(role: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency returning the caller's principal if its role is at least `role`."""

    async def dependency(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
    ) -> Principal:
        principal = await _authenticate(request, credentials)
        if not principal.allows(role):
            raise ApiError(
                403, f"this needs the {role} role; the token is {principal.role}", rule="role"
            )
        return principal

    dependency.__name__ = f"require_{role}"
    return dependency
