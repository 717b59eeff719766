"""API tokens over the API (admin only): list, create (the secret is in this one response),
revoke. Each change is audited by `eventops.api.tokens` in the transaction that makes it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from eventops.api.auth import context_of, require
from eventops.api.pagination import Page, PageRequest, page_request, paginate
from eventops.api.tokens import Principal, Role, create_token, list_tokens, parse_expiry, revoke
from eventops.events.envelope import format_time

router = APIRouter(prefix="/api/tokens", tags=["tokens"])
Admin = Depends(require("admin"))


class TokenCreate(BaseModel):
    name: str = Field(..., min_length=1, max_length=255)
    role: Role
    expires: str | None = Field(None, description="A lifetime such as 30d or 12h; none: never.")


@router.get("", response_model=Page, summary="Every token (never a secret)")
def tokens(
    request: Request, page: PageRequest = Depends(page_request), principal: Principal = Admin
) -> Page:
    return paginate(list_tokens(context_of(request).store), page)


@router.post("", status_code=201, summary="Create a token; the secret is shown only here")
def create(request: Request, body: TokenCreate, principal: Principal = Admin) -> dict[str, Any]:
    made = create_token(
        context_of(request).store, body.name, body.role,
        expires_in=parse_expiry(body.expires), actor=principal.name,
    )  # fmt: skip
    return {
        "id": made.id, "name": made.name, "role": made.role, "secret": made.secret,
        "expires_at": format_time(made.expires_at) if made.expires_at else None,
    }  # fmt: skip


@router.delete("/{token_id}", summary="Revoke a token")
def delete(request: Request, token_id: str, principal: Principal = Admin) -> dict[str, Any]:
    return revoke(context_of(request).store, token_id, actor=principal.name)
