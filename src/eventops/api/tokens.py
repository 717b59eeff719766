"""API tokens: create (the secret is shown once), verify, revoke, list.

Why a salted SHA-256 and not scrypt or bcrypt: those slow hashes exist to protect *passwords*,
which people choose and which can be guessed. A token's secret is 32 random bytes (256 bits);
guessing it is infeasible at any hash speed, so a slow hash would only add tens of milliseconds
to every API request. The token id is mixed into the hash input (``sha256("<id>:<secret>")``)
as a per-token salt, so equal digests never reveal equal secrets and a digest computed for one
row is useless against another.

The row is found by `prefix` (the first 12 characters of the secret after ``eo_``); the digest
is then compared with `hmac.compare_digest`, which takes the same time wherever the first
difference is. When no row has the prefix, a dummy digest is still compared, so a miss costs
the same as a wrong secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import select

from eventops.api.audit import audit_event
from eventops.errors import NotFound, ValidationError
from eventops.events.envelope import format_time
from eventops.quantities import parse_duration
from eventops.store import Store, add_event, utcnow
from eventops.store.tokens import PREFIX_LENGTH, ApiTokenRow

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")  # each includes the ones before it
SECRET_PREFIX = "eo_"  # noqa: S105  (a public marker that makes leaked tokens greppable)
SECRET_BYTES = 32
# last_used_at is written at most this often per token: a write per request would serialise
# every read on SQLite and cost a transaction each on PostgreSQL.
TOUCH_INTERVAL = timedelta(seconds=60)
_DUMMY_DIGEST = hashlib.sha256(b"no such token").hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, name (the `actor` of what it does) and role."""

    token_id: str
    name: str
    role: Role

    def allows(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


@dataclass(frozen=True)
class CreatedToken:
    """A new token; `secret` exists only here and is never stored or shown again."""

    id: str
    name: str
    role: Role
    secret: str
    expires_at: datetime | None


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise ValidationError(
        f"unknown role {role!r}; use one of {', '.join(ROLES)}", field="role", rule="one-of"
    )


def parse_expiry(value: str | None) -> timedelta | None:
    """`30d`, `12h`, ... as a timedelta; None or empty means the token never expires."""
    if not value:
        return None
    seconds = parse_duration(value, field="expires")
    if seconds <= 0:
        raise ValidationError("must be positive", field="expires", rule="positive")
    return timedelta(seconds=seconds)


def _digest(token_id: str, secret: str) -> str:
    return hashlib.sha256(f"{token_id}:{secret}".encode()).hexdigest()


def _prefix(secret: str) -> str:
    return secret[len(SECRET_PREFIX) : len(SECRET_PREFIX) + PREFIX_LENGTH]


def create_token(
    store: Store, name: str, role: str, *, expires_in: timedelta | None = None, actor: str
) -> CreatedToken:
    """Store a new token (its digest) and audit `audit.token.created`; returns the secret."""
    checked = check_role(role)
    if not name.strip() or len(name) > 255:
        raise ValidationError("give a name of 1 to 255 characters", field="name", rule="length")
    token_id = uuid.uuid4().hex
    secret = SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
    now = utcnow()
    expires_at = now + expires_in if expires_in is not None else None
    row = ApiTokenRow(
        id=token_id, name=name, role=checked, prefix=_prefix(secret),
        digest=_digest(token_id, secret), created_at=now, created_by=actor, expires_at=expires_at,
    )  # fmt: skip
    with store.session() as session:
        session.add(row)
        event = audit_event(actor, "token", "created", f"token/{token_id}", name=name, role=role)
        add_event(session, event)
    return CreatedToken(token_id, name, checked, secret, expires_at)


def verify(store: Store, secret: str, *, now: datetime | None = None) -> Principal | None:
    """The principal of a valid, unexpired, unrevoked token; None for anything else."""
    now = now or utcnow()
    matched: ApiTokenRow | None = None
    with store.session() as session:
        if secret.startswith(SECRET_PREFIX):
            rows = list(
                session.scalars(select(ApiTokenRow).where(ApiTokenRow.prefix == _prefix(secret)))
            )
        else:
            rows = []
        if not rows:  # compare anyway, so a miss costs what a wrong secret costs
            hmac.compare_digest(_DUMMY_DIGEST, _digest("", secret))
        for row in rows:
            if hmac.compare_digest(row.digest, _digest(row.id, secret)):
                matched = row
        if matched is None or matched.revoked_at is not None:
            return None
        if matched.expires_at is not None and matched.expires_at <= now:
            return None
        if matched.last_used_at is None or now - matched.last_used_at >= TOUCH_INTERVAL:
            matched.last_used_at = now
        return Principal(matched.id, matched.name, check_role(matched.role))


def revoke(store: Store, token_id: str, *, actor: str) -> dict[str, Any]:
    """Revoke a token (idempotent) and audit `audit.token.revoked`; NotFound if unknown."""
    with store.session() as session:
        row = session.get(ApiTokenRow, token_id)
        if row is None:
            raise NotFound(f"no API token {token_id!r}", field="token_id", rule="exists")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            event = audit_event(actor, "token", "revoked", f"token/{token_id}", name=row.name)
            add_event(session, event)
        return token_json(row)


def list_tokens(store: Store) -> list[dict[str, Any]]:
    """Every token, oldest first, as `token_json` shows it (never a secret or a digest)."""
    with store.session() as session:
        rows = session.scalars(select(ApiTokenRow).order_by(ApiTokenRow.created_at, ApiTokenRow.id))
        return [token_json(row) for row in rows]


def has_active_token(store: Store, role: Role = "admin") -> bool:
    """Whether any unrevoked, unexpired token of `role` (or above) exists."""
    wanted = ROLES.index(role)
    return any(
        t["status"] == "active" and t["role"] in ROLES and ROLES.index(t["role"]) >= wanted
        for t in list_tokens(store)
    )


def _when(value: datetime | None) -> str | None:
    return format_time(value) if value is not None else None


def token_json(row: ApiTokenRow) -> dict[str, Any]:
    if row.revoked_at is not None:
        status = "revoked"
    elif row.expires_at is not None and row.expires_at <= utcnow():
        status = "expired"
    else:
        status = "active"
    return {
        "id": row.id, "name": row.name, "role": row.role, "hint": SECRET_PREFIX + row.prefix[:4] + "...",
        "status": status, "created_at": _when(row.created_at), "created_by": row.created_by,
        "expires_at": _when(row.expires_at), "revoked_at": _when(row.revoked_at),
        "last_used_at": _when(row.last_used_at),
    }  # fmt: skip
