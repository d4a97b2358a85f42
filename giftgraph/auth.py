"""Bearer JWTs: verification with an algorithm allowlist, and development tokens.

In development without a configured secret, a random one is created in the data
directory so `giftgraph token USER_ID` works out of the box; production refuses
to start without a configured secret (see Settings).
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import jwt

from giftgraph.settings import Settings

DEV_SECRET_FILE = "dev-jwt-secret"


class InvalidToken(Exception):
    """The bearer token cannot be trusted; the message is safe to show (no token inside)."""


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


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self._secret = signing_secret(settings)
        self._algorithms = list(settings.jwt_algorithms)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._leeway = settings.jwt_leeway_seconds

    def user_id(self, authorization: str | None) -> str | None:
        """The `sub` of a valid `Bearer` token; None without a header; InvalidToken otherwise."""
        if authorization is None or not authorization.strip():
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("The Authorization header must be `Bearer <token>`.")
        return self.verify(token.strip())

    def verify(self, token: str) -> str:
        required = ["exp", "sub"] + (["iss"] if self._issuer else []) + (["aud"] if self._audience else [])
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=self._algorithms,
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options={"require": required},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("The token has expired.") from exc
        except jwt.PyJWTError as exc:  # InvalidTokenError, and key errors a crafted header can provoke
            raise InvalidToken("The token is not valid.") from exc
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject or len(subject) > 255:
            raise InvalidToken("The token has no valid subject.")
        return subject


def issue_token(settings: Settings, user_id: str, *, ttl_seconds: int | None = None) -> str:
    """A signed token for `user_id`: for development and tests, not an identity provider."""
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
