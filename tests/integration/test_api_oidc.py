"""OIDC bearer tokens against a real JWKS endpoint on loopback: valid tokens get the role their
claim maps to; a wrong signature, issuer, audience, an expired token, an HS256 token and a token
without a mapped role are refused; key rotation is picked up; EventOps tokens still work."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm

from eventops.api import create_api
from eventops.api.tokens import create_token
from eventops.config import AuthSettings, load_settings
from eventops.errors import ConfigError
from eventops.store import Store

ISSUER = "https://idp.example.test/pool"
AUDIENCE = "eventops-api"


class Keys:
    """An identity provider's signing keys, published as a JWKS on loopback."""

    def __init__(self) -> None:
        self.private: dict[str, rsa.RSAPrivateKey] = {}
        self.fetches = 0
        self.add("k1")

    def add(self, kid: str) -> None:
        self.private[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, key in self.private.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def token(self, kid: str = "k1", **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-1", "email": "ana@example.test",
                "iat": now, "exp": now + 300, **claims}  # fmt: skip
        body = {k: v for k, v in body.items() if v is not None}
        return jwt.encode(body, self.private[kid], algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def idp() -> Iterator[tuple[Keys, str]]:
    keys = Keys()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            keys.fetches += 1
            body = json.dumps(keys.jwks()).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield keys, f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def client(
    home: Path, idp: tuple[Keys, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    _, url = idp
    monkeypatch.setenv("EVENTOPS_AUTH_OIDC_ISSUER", ISSUER)
    monkeypatch.setenv("EVENTOPS_AUTH_OIDC_AUDIENCE", AUDIENCE)
    monkeypatch.setenv("EVENTOPS_AUTH_OIDC_JWKS_URL", url)
    monkeypatch.setenv("EVENTOPS_AUTH_OIDC_ROLE_CLAIM", "cognito:groups")
    monkeypatch.setenv(
        "EVENTOPS_AUTH_OIDC_ROLES", "ml-admins=admin, ml-ops=operator, ml-team=viewer"
    )
    settings = load_settings()
    store = Store(settings.store_url)
    store.upgrade()
    yield TestClient(create_api(settings, store=store, rate_burst=10_000))
    store.close()


def hs256(claims: dict[str, Any], secret: bytes, *, kid: str) -> str:
    """A JWT signed with HMAC-SHA256, built by hand (PyJWT refuses a key that looks public)."""

    def part(value: bytes) -> str:
        return base64.urlsafe_b64encode(value).rstrip(b"=").decode()

    head = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = part(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{part(signature)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_roles_come_from_the_mapped_claim(client: TestClient, idp: tuple[Keys, str]) -> None:
    keys, _ = idp
    viewer = keys.token(**{"cognito:groups": ["ml-team", "unrelated"]})
    operator = keys.token(**{"cognito:groups": ["ml-team", "ml-ops"]})  # the highest one wins
    assert client.get("/api/events", headers=bearer(viewer)).status_code == 200
    refused = client.post("/api/pipelines/p/runs", headers=bearer(viewer), json={})
    assert refused.status_code == 403
    assert refused.json()["error"]["rule"] == "role"
    # an operator may request; the pipeline is unknown here: 404, past authorisation
    assert (
        client.post("/api/pipelines/p/runs", headers=bearer(operator), json={}).status_code == 404
    )
    admin = keys.token(**{"cognito:groups": "ml-admins"})  # a single string is a value too
    assert client.get("/api/tokens", headers=bearer(admin)).status_code == 200


def test_a_valid_token_without_a_mapped_role_gets_403(
    client: TestClient, idp: tuple[Keys, str]
) -> None:
    keys, _ = idp
    for claims in ({"cognito:groups": ["someone-else"]}, {}):
        response = client.get("/api/events", headers=bearer(keys.token(**claims)))
        assert response.status_code == 403
        assert "no EventOps role" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"iss": "https://evil.example.test/"}, "issuer"),
        ({"aud": "another-api"}, "audience"),
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"exp": None}, "exp"),
    ],
)
def test_tokens_for_someone_else_or_stale_are_401(
    client: TestClient, idp: tuple[Keys, str], claims: dict[str, Any], reason: str
) -> None:
    keys, _ = idp
    token = keys.token(**{"cognito:groups": ["ml-admins"], **claims})
    response = client.get("/api/events", headers=bearer(token))
    assert response.status_code == 401, reason
    assert response.json()["error"]["rule"] == "valid-token"
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_forged_signatures_and_symmetric_tokens_are_401(
    client: TestClient, idp: tuple[Keys, str]
) -> None:
    keys, _ = idp
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60,
              "cognito:groups": ["ml-admins"]}  # fmt: skip
    forged = jwt.encode(claims, stranger, algorithm="RS256", headers={"kid": "k1"})
    assert client.get("/api/events", headers=bearer(forged)).status_code == 401
    # HS256 signed with the public key as a "secret": the classic algorithm-confusion attack
    public = RSAAlgorithm.to_jwk(keys.private["k1"].public_key()).encode()
    hs = hs256(claims, public, kid="k1")
    assert client.get("/api/events", headers=bearer(hs)).status_code == 401


def test_a_rotated_key_is_fetched_and_cognito_client_id_is_the_audience(
    client: TestClient, idp: tuple[Keys, str]
) -> None:
    keys, _ = idp
    client.app.state.context.oidc_refresh_cooldown = 0.0  # type: ignore[attr-defined]
    first = keys.token(**{"cognito:groups": ["ml-team"]})
    assert client.get("/api/events", headers=bearer(first)).status_code == 200
    fetched = keys.fetches
    keys.add("k2")
    # Cognito access tokens carry client_id instead of aud
    rotated = keys.token("k2", aud=None, client_id=AUDIENCE, **{"cognito:groups": ["ml-team"]})
    answer = client.get("/api/events", headers=bearer(rotated))
    assert answer.status_code == 200, answer.text
    assert keys.fetches > fetched


def test_api_tokens_keep_working_beside_oidc(client: TestClient) -> None:
    store = client.app.state.context.store  # type: ignore[attr-defined]
    made = create_token(store, "ci", "viewer", actor="test")
    assert client.get("/api/events", headers=bearer(made.secret)).status_code == 200
    assert client.get("/api/events", headers=bearer("eyJ.not.jwt")).status_code == 401


def test_an_unreachable_key_set_is_401_not_500(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTOPS_AUTH_OIDC_ISSUER", ISSUER)
    monkeypatch.setenv("EVENTOPS_AUTH_OIDC_JWKS_URL", "http://127.0.0.1:9/jwks.json")
    settings = load_settings()
    store = Store(settings.store_url)
    store.upgrade()
    try:
        client = TestClient(create_api(settings, store=store))
        keys = Keys()
        response = client.get("/api/events", headers=bearer(keys.token()))
        assert response.status_code == 401
        assert "unreachable" in response.json()["error"]["message"]
    finally:
        store.close()


def test_oidc_settings_are_checked() -> None:
    with pytest.raises(ConfigError) as bad_role:
        AuthSettings(oidc_roles="team=superuser")  # type: ignore[arg-type]
    assert bad_role.value.field == "auth.oidc_roles.team"
    with pytest.raises(ConfigError) as bad_pair:
        AuthSettings(oidc_roles="team")  # type: ignore[arg-type]
    assert bad_pair.value.rule == "pairs"
    with pytest.raises(ConfigError) as symmetric:
        AuthSettings(oidc_algorithms="HS256")  # type: ignore[arg-type]
    assert symmetric.value.rule == "asymmetric"
    cognito = AuthSettings(oidc_issuer="https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_x")
    assert cognito.jwks_url == (
        "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_x/.well-known/jwks.json"
    )
