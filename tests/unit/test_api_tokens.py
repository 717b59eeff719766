"""API tokens against a real SQLite store: the secret is shown once and stored only as a salted
digest, verification compares in constant time, expiry and revocation end a token, every change
is audited through the outbox; the rate limiter's buckets; the `eventops tokens` commands."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from eventops.api import tokens as tokens_module
from eventops.api.limits import RateLimiter
from eventops.api.tokens import (
    create_token,
    has_active_token,
    list_tokens,
    parse_expiry,
    revoke,
    verify,
)
from eventops.cli import app
from eventops.errors import NotFound, ValidationError
from eventops.events.envelope import Event
from eventops.store import OutboxEntry, Store, utcnow
from eventops.store.tokens import ApiTokenRow


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(f"sqlite:///{tmp_path}/meta.db")
    store.upgrade()
    yield store
    store.close()


def audits(store: Store) -> list[Event]:
    with store.session() as session:
        rows = session.scalars(select(OutboxEntry).order_by(OutboxEntry.id)).all()
        events = [Event.from_json(r.payload) for r in rows]
    return [e for e in events if e.type.startswith("audit.")]


def test_secret_is_shown_once_and_only_a_salted_digest_is_stored(store: Store) -> None:
    made = create_token(store, "ci", "operator", actor="alice")
    assert made.secret.startswith("eo_") and len(made.secret) == 3 + 43  # 32 bytes, base64url
    with store.session() as session:
        row = session.get(ApiTokenRow, made.id)
        assert row is not None
        stored = [str(getattr(row, c.name)) for c in ApiTokenRow.__table__.columns]
        assert row.digest == hashlib.sha256(f"{made.id}:{made.secret}".encode()).hexdigest()
    assert all(made.secret[3:] not in value for value in stored)
    listed = list_tokens(store)
    assert [t["id"] for t in listed] == [made.id]
    assert made.secret[3:] not in json.dumps(listed)
    assert listed[0]["status"] == "active" and listed[0]["created_by"] == "alice"


def test_verify_accepts_the_secret_and_nothing_else(store: Store) -> None:
    made = create_token(store, "ci", "viewer", actor="alice")
    principal = verify(store, made.secret)
    assert principal is not None
    assert (principal.token_id, principal.name, principal.role) == (made.id, "ci", "viewer")
    assert verify(store, made.secret[:-1] + ("A" if made.secret[-1] != "A" else "B")) is None
    assert verify(store, "eo_" + "x" * 43) is None
    assert verify(store, "not-a-token") is None
    assert verify(store, "") is None
    assert list_tokens(store)[0]["last_used_at"] is not None


def test_verify_compares_digests_in_constant_time(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = create_token(store, "ci", "viewer", actor="alice")
    calls: list[tuple[str, str]] = []
    real = tokens_module.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(tokens_module.hmac, "compare_digest", spy)
    assert verify(store, made.secret) is not None
    assert verify(store, "eo_nothing-like-it") is None  # a miss still compares once
    assert len(calls) == 2


def test_expired_and_revoked_tokens_stop_working(store: Store) -> None:
    short = create_token(store, "short", "admin", expires_in=timedelta(hours=1), actor="alice")
    assert verify(store, short.secret) is not None
    assert verify(store, short.secret, now=utcnow() + timedelta(hours=2)) is None
    made = create_token(store, "ci", "operator", actor="alice")
    revoked = revoke(store, made.id, actor="bob")
    assert revoked["status"] == "revoked"
    assert verify(store, made.secret) is None
    revoke(store, made.id, actor="bob")  # again: nothing changes, nothing audited twice
    with pytest.raises(NotFound):
        revoke(store, "nope", actor="bob")
    kinds = [(e.type, e.data["actor"], e.data["resource"]) for e in audits(store)]
    assert kinds == [
        ("audit.token.created", "alice", f"token/{short.id}"),
        ("audit.token.created", "alice", f"token/{made.id}"),
        ("audit.token.revoked", "bob", f"token/{made.id}"),
    ]
    assert all(made.secret not in json.dumps(e.data) for e in audits(store))


def test_roles_and_expiry_are_validated(store: Store) -> None:
    with pytest.raises(ValidationError) as err:
        create_token(store, "x", "root", actor="alice")
    assert err.value.field == "role"
    with pytest.raises(ValidationError):
        create_token(store, " ", "viewer", actor="alice")
    assert parse_expiry("30d") == timedelta(days=30)
    assert parse_expiry(None) is None
    with pytest.raises(ValidationError):
        parse_expiry("soon")
    assert not has_active_token(store)
    create_token(store, "v", "viewer", actor="alice")
    assert not has_active_token(store)
    create_token(store, "a", "admin", actor="alice")
    assert has_active_token(store)


def test_principal_roles_are_ordered(store: Store) -> None:
    operator = verify(store, create_token(store, "o", "operator", actor="a").secret)
    assert operator is not None
    assert operator.allows("viewer") and operator.allows("operator")
    assert not operator.allows("admin")


def test_rate_limiter_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(per_second=2.0, burst=2, clock=lambda: now[0])
    assert limiter.take("a") is None and limiter.take("a") is None
    wait = limiter.take("a")
    assert wait == pytest.approx(0.5)
    assert limiter.take("b") is None  # buckets are per key
    now[0] = 0.5
    assert limiter.take("a") is None


def test_tokens_cli_creates_lists_and_revokes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [v for v in os.environ if v.startswith("EVENTOPS_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("EVENTOPS_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    created = runner.invoke(
        app, ["tokens", "create", "ci", "--role", "operator", "--expires", "30d"]
    )
    assert created.exit_code == 0, created.output
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("eo_")
    listed = runner.invoke(app, ["tokens", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    [token] = json.loads(listed.stdout)
    assert token["role"] == "operator" and token["expires_at"] is not None
    assert secret[3:] not in listed.stdout
    assert runner.invoke(app, ["tokens", "revoke", token["id"]]).exit_code == 0
    assert runner.invoke(app, ["tokens", "revoke", "nope"]).exit_code == 3
    bad = runner.invoke(app, ["tokens", "create", "x", "--role", "root"])
    assert bad.exit_code == 2
