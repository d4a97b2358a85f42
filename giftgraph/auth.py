"""Bearer JWTs: verification with an algorithm allowlist, and development tokens.

Two modes, chosen by the settings: a shared secret (HMAC algorithms only), or an identity
provider's public keys from a JWKS URL (RSA/EC algorithms only, see giftgraph.jwks). Never both,
so a token's header can never choose how it is checked (HS/RS key confusion).

In development without a configured secret, a random one is created in the data
directory so `giftgraph token USER_ID` works out of the box; production refuses
to start without a secret or a JWKS URL (see Settings).
"""

from __future__ import annotations

import math
import os
import secrets
import time
from pathlib import Path
from typing import Any

import jwt

from giftgraph.jwks import JwksKeys, JwksUnavailable
from giftgraph.settings import ConfigurationError, Settings

DEV_SECRET_FILE = "dev-jwt-secret"
MAX_SUBJECT_LENGTH = 255


def user_id_error(user_id: str) -> str | None:
    """Why `user_id` cannot name a user, or None: blank, or longer than a bearer token's subject may be.
    One rule for every way in: tokens (verified and issued), the loyalty webhook, `giftgraph points grant`."""
    if not user_id.strip():
        return "the user id must not be blank"
    if len(user_id) > MAX_SUBJECT_LENGTH:
        return f"the user id must be at most {MAX_SUBJECT_LENGTH} characters"
    return None


class InvalidToken(Exception):
    """The bearer token cannot be trusted; the message is safe to show (no token inside)."""


class TokenUnverifiable(Exception):
    """The token cannot be checked now: the identity provider's keys are out of reach. Retryable."""

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


def signing_secret(settings: Settings) -> str:
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    if settings.is_production:
        raise RuntimeError("GIFTGRAPH_JWT_SECRET is required in production")
    path = settings.data_dir / DEV_SECRET_FILE
    return _read_or_create_secret(path)


def _read_or_create_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


# PyJWT's reasons, in words a client can act on; anything else is "not valid".
_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "The token has expired."),
    (jwt.ImmatureSignatureError, "The token is not valid yet."),
    (jwt.InvalidAudienceError, "The token was issued for another audience."),
    (jwt.InvalidIssuerError, "The token was issued by another issuer."),
)


class TokenVerifier:
    """Checks bearer tokens: signature, algorithm, `exp`, `sub`, and the configured `iss` and `aud`."""

    def __init__(self, settings: Settings) -> None:
        self._algorithms = list(settings.jwt_algorithms)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds
        self._required = ["exp", "sub"] + (["iss"] if self._issuer else []) + (["aud"] if self._audience else [])
        self.jwks: JwksKeys | None = None
        self._secret: str | None = None
        if settings.jwt_jwks_url:
            self.jwks = JwksKeys(
                settings.jwt_jwks_url,
                algorithms=self._algorithms,
                cache_seconds=settings.jwt_jwks_cache_seconds,
                min_refresh_seconds=settings.jwt_jwks_min_refresh_seconds,
            )
        else:
            self._secret = signing_secret(settings)

    async def user_id(self, authorization: str | None) -> str | None:
        """The `sub` of a valid `Bearer` token; None without a header; InvalidToken otherwise
        (TokenUnverifiable when the identity provider's keys cannot be fetched)."""
        identity = await self.identity(authorization)
        return None if identity is None else identity[0]

    async def identity(self, authorization: str | None) -> tuple[str, float] | None:
        """(`sub`, the Unix time after which the token is no longer accepted) of a valid `Bearer` token."""
        if authorization is None or not authorization.strip():
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("The Authorization header must be `Bearer <token>`.")
        claims = await self._claims(token.strip())
        return claims["sub"], float(claims["exp"]) + self._leeway

    async def verify(self, token: str) -> str:
        return (await self._claims(token))["sub"]

    async def _claims(self, token: str) -> dict[str, Any]:
        key = await self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                # A short RSA key in the key set is refused rather than trusted with a warning.
                options={"require": self._required, "enforce_minimum_key_length": self.jwks is not None},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"The token lacks the required claim '{exc.claim}'.") from exc
        except jwt.PyJWTError as exc:  # InvalidTokenError, and key errors a crafted header can provoke
            reason = next((text for kind, text in _REASONS if isinstance(exc, kind)), "The token is not valid.")
            raise InvalidToken(reason) from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or user_id_error(subject) is not None:
            raise InvalidToken("The token has no valid subject.")
        return claims

    async def _key_for(self, token: str) -> str | jwt.PyJWK:
        if self.jwks is None:
            assert self._secret is not None
            return self._secret
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("The token is not valid.") from exc
        # Judged before the identity provider is asked: `none`, HS256 (key confusion) and any other
        # algorithm outside the allowlist never cost a JWKS fetch.
        if header.get("alg") not in self._algorithms:
            raise InvalidToken("The token is not valid.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("The token has no key id (kid).")
        try:
            key = await self.jwks.key_for(kid)
        except JwksUnavailable as exc:
            raise TokenUnverifiable(
                "The identity provider's signing keys are unavailable; retry shortly.",
                retry_after_seconds=max(1, math.ceil(exc.retry_after)),
            ) from exc
        if key is None:
            raise InvalidToken("The token was signed with an unknown key.")
        return key


def issue_token(settings: Settings, user_id: str, *, ttl_seconds: int | None = None) -> str:
    """A signed token for `user_id`: for development and tests, not an identity provider."""
    if settings.jwt_jwks_url:
        raise ConfigurationError(
            "giftgraph cannot issue tokens when GIFTGRAPH_JWT_JWKS_URL is set: they come from the identity provider"
        )
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": user_id,
        "iat": now,
        "exp": now + (ttl_seconds or settings.dev_token_ttl_seconds),
    }
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    return jwt.encode(claims, signing_secret(settings), algorithm=settings.jwt_algorithms[0])
