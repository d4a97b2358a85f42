"""Who may call the sandbox service: an API key and secret (HTTP Basic) or an OAuth2 client-credentials
token, and how often (a moving-window rate limit per credential, 429 with Retry-After beyond it).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote_plus

from limits import parse as parse_rate
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from providers.rest.contract import API_PREFIX, TokenWire, error_body
from providers.sandbox.credentials import SandboxCredentials

REALM = "giftgraph-sandbox"
ADMIN_PREFIX = f"{API_PREFIX}/sandbox/"  # test tooling: authenticated, never rate limited
MAX_TOKENS = 10_000  # live tokens kept; the oldest go first beyond it
MAX_FORM_BYTES = 8192


def _same(given: str, expected: str) -> bool:
    # Constant time: how much of a secret matched must not show in the response time.
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _basic(authorization: str) -> tuple[str, str] | None:
    """The (user, password) of an `Authorization: Basic ...` value, or None when it is anything else."""
    scheme, _, param = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(param.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user, separator, password = decoded.partition(":")
    return (user, password) if separator else None


@dataclass(slots=True)
class _Token:
    client_id: str
    expires_at: float


class TokenStore:
    """Opaque random bearer tokens held in memory (by digest) until they expire."""

    def __init__(self, *, ttl_seconds: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_seconds < 1:
            raise ValueError("token_ttl_seconds must be at least 1")
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._tokens: dict[str, _Token] = {}
        self.issued = 0

    def issue(self, client_id: str) -> TokenWire:
        now = self._clock()
        self._tokens = {digest: token for digest, token in self._tokens.items() if token.expires_at > now}
        while len(self._tokens) >= MAX_TOKENS:
            del self._tokens[next(iter(self._tokens))]
        token = secrets.token_urlsafe(32)
        self._tokens[_digest(token)] = _Token(client_id=client_id, expires_at=now + self.ttl_seconds)
        self.issued += 1
        return TokenWire(access_token=token, token_type="Bearer", expires_in=self.ttl_seconds)

    def holder(self, token: str) -> str | None:
        """The client the token was issued to; None when it is unknown or expired."""
        digest = _digest(token)
        found = self._tokens.get(digest)
        if found is None:
            return None
        if found.expires_at <= self._clock():
            del self._tokens[digest]
            return None
        return found.client_id


def _digest(token: str) -> str:
    # Looked up by digest: the dict never holds a usable token, and lookups leak nothing about one.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Authenticator:
    """Checks an Authorization header against the sandbox's credentials and live tokens."""

    def __init__(self, credentials: SandboxCredentials, tokens: TokenStore) -> None:
        self._credentials = credentials
        self.tokens = tokens

    def caller(self, authorization: str | None) -> str | None:
        """The caller's identity ("api_key:<key>" or "client:<id>"), or None when not authenticated."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            client_id = self.tokens.holder(token.strip())
            return None if client_id is None else f"client:{client_id}"
        pair = _basic(authorization)
        if pair is None:
            return None
        key, secret = pair
        # Both comparisons always run (`&`, not `and`): a wrong key takes as long as a wrong secret.
        if _same(key, self._credentials.api_key) & _same(secret, self._credentials.api_secret):
            return f"api_key:{key}"
        return None

    def client(self, client_id: str, client_secret: str) -> bool:
        return _same(client_id, self._credentials.client_id) & _same(client_secret, self._credentials.client_secret)


class CredentialRateLimiter:
    """A moving window per caller, in this process's memory (the `limits` library)."""

    def __init__(self, rate: str) -> None:
        self.item = parse_rate(rate)  # ValueError on a bad notation
        self._limiter = MovingWindowRateLimiter(storage_from_string("async+memory://"))  # type: ignore[arg-type]

    async def retry_after(self, caller: str) -> int | None:
        """None when the call may go ahead; else the whole seconds until the window lets it in."""
        if await self._limiter.hit(self.item, caller):
            return None
        reset, _ = await self._limiter.get_window_stats(self.item, caller)
        return max(1, math.ceil(reset - time.time()))


def rate_limited(retry_after: int) -> JSONResponse:
    return JSONResponse(
        error_body("rate_limited", f"rate limit exceeded; retry in {retry_after} seconds"),
        status_code=429,
        headers={"Retry-After": str(retry_after)},
    )


def unauthenticated(*, bearer_used: bool) -> JSONResponse:
    bearer = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if bearer_used else "")
    return JSONResponse(
        error_body("authentication_failed", "missing, invalid or expired credentials"),
        status_code=401,
        headers={"WWW-Authenticate": f'Basic realm="{REALM}", {bearer}'},
    )


class GuardMiddleware:
    """Every /v1 request is authenticated; port routes are rate limited per credential."""

    def __init__(self, app: ASGIApp, *, authenticator: Authenticator, limiter: CredentialRateLimiter) -> None:
        self.app = app
        self.authenticator = authenticator
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == API_PREFIX or path.startswith(f"{API_PREFIX}/")):
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization")
        caller = self.authenticator.caller(authorization)
        if caller is None:
            # Failed attempts count against the caller's address: guessing secrets is rate limited too.
            client = scope.get("client")
            retry_after = await self.limiter.retry_after(f"address:{client[0] if client else '-'}")
            if retry_after is not None:
                await rate_limited(retry_after)(scope, receive, send)
                return
            bearer_used = (authorization or "").lower().startswith("bearer ")
            await unauthenticated(bearer_used=bearer_used)(scope, receive, send)
            return
        if not path.startswith(ADMIN_PREFIX):
            retry_after = await self.limiter.retry_after(caller)
            if retry_after is not None:
                await rate_limited(retry_after)(scope, receive, send)
                return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


class TokenEndpoint:
    """POST /oauth/token: the client-credentials grant (RFC 6749 4.4), errors in the RFC's own shape (5.2)."""

    def __init__(self, authenticator: Authenticator, limiter: CredentialRateLimiter) -> None:
        self.authenticator = authenticator
        self.limiter = limiter

    async def token(self, request: Request) -> Response:
        # Unauthenticated callers may send this: read at most MAX_FORM_BYTES into memory.
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return _oauth_error("invalid_request", 400)
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False))
        except UnicodeDecodeError:
            return _oauth_error("invalid_request", 400)
        basic = _basic(request.headers.get("authorization", ""))
        in_form = "client_id" in form or "client_secret" in form
        if basic is not None and in_form:
            return _oauth_error("invalid_request", 400)  # 2.3: one client authentication method per request
        if form.get("grant_type") != "client_credentials":
            return _oauth_error("unsupported_grant_type" if form.get("grant_type") else "invalid_request", 400)
        if basic is not None:
            # 2.3.1: the id and secret are form-encoded before they go into the Basic header.
            client_id, client_secret = unquote_plus(basic[0]), unquote_plus(basic[1])
        else:
            client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        if not self.authenticator.client(client_id, client_secret):
            headers = {"WWW-Authenticate": f'Basic realm="{REALM}"'} if basic is not None else None
            return _oauth_error("invalid_client", 401, headers=headers)
        retry_after = await self.limiter.retry_after(f"client:{client_id}")
        if retry_after is not None:
            return rate_limited(retry_after)
        token = self.authenticator.tokens.issue(client_id)
        return Response(
            token.model_dump_json(),
            media_type="application/json",
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )


def _oauth_error(code: str, status: int, *, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code}, status_code=status, headers={"Cache-Control": "no-store", **(headers or {})})
