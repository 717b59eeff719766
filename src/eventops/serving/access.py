"""Who may call what, and how much they may send: the bearer token and the body limit.

The token is compared in constant time. Without a token, feedback (which writes events) is
taken only when the server allows anonymous feedback, which the CLI does on loopback addresses
alone; prediction routes need the token only when the deployment protects them.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from eventops.errors import EventOpsError


class HTTPProblem(EventOpsError):
    """A request-level refusal with its own HTTP status (401, 403, 404, 413, 503...)."""

    def __init__(self, status: int, message: str, *, field: str | None, rule: str) -> None:
        super().__init__(message, field=field, rule=rule)
        self.http_status = status


class Guard:
    def __init__(self, token: str | None, *, anonymous_feedback: bool = True) -> None:
        self._token = token.encode() if token else None
        self.anonymous_feedback = anonymous_feedback

    def check(self, request: Request, *, feedback: bool) -> None:
        """Raise HTTPProblem unless the request may go on. `feedback=False` is a protected
        prediction route: without a token it is refused (`serve` refuses to start that way,
        `create_app` and `build_server` do not)."""
        if self._token is None:
            if not feedback:  # protected predictions without a token: closed, never open
                raise HTTPProblem(
                    403, "predictions are protected but no token is configured: set EVENTOPS_TOKEN",
                    field="authorization", rule="token-configured",
                )  # fmt: skip
            if not self.anonymous_feedback:
                raise HTTPProblem(
                    403, "feedback needs a token on this address: set EVENTOPS_TOKEN",
                    field="authorization", rule="token-configured",
                )  # fmt: skip
            return
        scheme, _, given = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise HTTPProblem(
                401, "send Authorization: Bearer <token>", field="authorization",
                rule="bearer-token",
            )  # fmt: skip
        if not hmac.compare_digest(given.strip().encode(), self._token):
            raise HTTPProblem(
                403, "the token is not valid", field="authorization", rule="valid-token"
            )


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes (from
    Content-Length before reading, and while reading: a client can lie or send chunks)."""
    too_large = f"the body is larger than the limit of {limit:,} bytes"
    declared = request.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise HTTPProblem(413, too_large, field="body", rule="max-size")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(413, too_large, field="body", rule="max-size")
        chunks.append(chunk)
    return b"".join(chunks)


__all__ = ["Guard", "HTTPProblem", "read_body"]
