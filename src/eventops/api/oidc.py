"""OpenID Connect bearer tokens (Cognito, Keycloak, Entra ID, ...) verified against a JWKS.

Why PyJWT's `PyJWKClient` and not an OIDC client library: the API is a resource server, not a
client. It needs exactly one thing: check a JWT's signature with the issuer's published keys and
its `iss`, `aud`, `exp`, `nbf` claims. `PyJWKClient` fetches the JWKS, caches the keys and refetches
when a token names an unknown key id (key rotation). Only asymmetric algorithms are accepted (the
settings refuse HS* and `none`), so a token cannot be forged with a guessed shared secret.

Cognito access tokens carry no `aud`; their `client_id` claim is checked against the audience
instead. The role comes from a claim (a string or a list: Cognito puts groups in
`cognito:groups`), each value mapped through `oidc_roles`; the highest role wins. A token with
no mapped value is authenticated but has no role: 403, never a default.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import jwt

from eventops.api.tokens import ROLES, Principal, Role
from eventops.config import AuthSettings

log = logging.getLogger(__name__)
LEEWAY_SECONDS = 30  # clock skew tolerated on exp / nbf / iat


class OidcError(Exception):
    """A bearer token that is not a valid token of the configured issuer (answered 401)."""


class NoRole(Exception):
    """A valid token whose role claim maps to no EventOps role (answered 403)."""


class OidcVerifier:
    """Verifies bearer JWTs for one issuer and audience; thread-safe (PyJWKClient locks)."""

    def __init__(
        self, settings: AuthSettings, *, timeout: float = 5.0, refresh_cooldown: float = 30.0
    ) -> None:
        """`refresh_cooldown`: a token naming an unknown key refetches the key set at most this
        often, so a stream of junk tokens cannot make the API hammer the identity provider."""
        if not settings.oidc_issuer or settings.jwks_url is None:
            raise ValueError("OIDC needs auth.oidc_issuer")
        self.settings = settings
        self.issuer = settings.oidc_issuer
        self.audience = settings.oidc_audience
        self.keys = jwt.PyJWKClient(
            settings.jwks_url, cache_keys=True, timeout=timeout, cooldown_duration=refresh_cooldown
        )

    @staticmethod
    def looks_like_jwt(credential: str) -> bool:
        return credential.count(".") == 2 and credential.startswith("ey")

    def verify(self, credential: str) -> Principal:
        try:
            key = self.keys.get_signing_key_from_jwt(credential)
            claims: dict[str, Any] = jwt.decode(
                credential,
                key=key.key,
                algorithms=self.settings.oidc_algorithms,
                issuer=self.issuer,
                options={"require": ["exp", "iss", "sub"], "verify_aud": False},
                leeway=LEEWAY_SECONDS,
            )
        except jwt.PyJWKClientConnectionError as exc:
            log.warning("the OIDC key set at %s is unreachable: %s", self.settings.jwks_url, exc)
            raise OidcError("the identity provider's keys are unreachable") from None
        except jwt.PyJWTError as exc:
            raise OidcError(f"the bearer token is not valid: {exc}") from None
        self._check_audience(claims)
        role = self.role_of(claims.get(self.settings.oidc_role_claim))
        name = str(claims.get("email") or claims.get("username") or claims["sub"])
        if role is None:
            raise NoRole(f"{name} has no EventOps role in claim {self.settings.oidc_role_claim!r}")
        return Principal(f"oidc:{claims['sub']}", name, role)

    def _check_audience(self, claims: dict[str, Any]) -> None:
        if self.audience is None:
            return
        audience = claims.get("aud", claims.get("client_id"))
        values = audience if isinstance(audience, list) else [audience]
        if self.audience not in values:
            raise OidcError("the bearer token is not valid: it is meant for another audience")

    def role_of(self, claim: Any) -> Role | None:
        values: Iterable[Any] = claim if isinstance(claim, list) else [claim]
        best: Role | None = None
        for value in values:
            if not isinstance(value, str):
                continue
            mapped = self.settings.oidc_roles.get(value, value)
            for role in ROLES:
                if mapped == role and (best is None or ROLES.index(role) > ROLES.index(best)):
                    best = role
        return best
