"""Bearer-token authentication and roles, as FastAPI dependencies.

A credential is an EventOps API token (``eo_...``) or, when `auth.oidc_issuer` is set, an OIDC
JWT (`api.oidc`). The web UI keeps a token in a cookie, honoured for reads only.

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
from eventops.api.oidc import NoRole, OidcError
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


SESSION_COOKIE = "eventops_session"  # the web UI's copy of a token (HttpOnly, SameSite=Strict)
SAFE_METHODS = frozenset({"GET", "HEAD"})


def credential_of(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str | None:
    """The bearer token, else (for reads only) the UI's session cookie.

    The cookie is accepted for GET and HEAD only: a page another site makes a browser submit
    can then never change anything (no CSRF), whatever SameSite a browser honours. Mutations
    need the Authorization header, which a browser never adds by itself."""
    if credentials is not None and credentials.scheme.lower() == "bearer":
        return credentials.credentials
    if request.method in SAFE_METHODS:
        return request.cookies.get(SESSION_COOKIE) or None
    return None


def _check_credential(ctx: ApiContext, credential: str) -> Principal:
    """The principal behind an EventOps token or (when configured) an OIDC JWT."""
    oidc = ctx.oidc()
    if oidc is not None and oidc.looks_like_jwt(credential):
        try:
            return oidc.verify(credential)
        except OidcError as exc:
            raise ApiError(401, str(exc), rule="valid-token", headers=CHALLENGE) from None
        except NoRole as exc:
            raise ApiError(403, str(exc), rule="role") from None
    found = verify(ctx.store, credential)
    if found is None:
        raise ApiError(
            401, "the token is unknown, expired or revoked", rule="valid-token", headers=CHALLENGE
        )
    return found


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
        credential = credential_of(request, credentials)
        if credential is None:
            raise ApiError(
                401, "send Authorization: Bearer <token>", rule="authenticated", headers=CHALLENGE
            )
        principal = await run_in_threadpool(_check_credential, ctx, credential)
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
