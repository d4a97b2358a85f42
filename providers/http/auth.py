"""Provider authentication as httpx.Auth: an API key and secret, or OAuth2 client credentials.

Neither ever puts a credential or token in a repr, a log line or an exception message.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx

from providers.errors import (
    ProviderAuthenticationFailed,
    ProviderError,
    ProviderMalformedResponse,
    ProviderRateLimited,
    ProviderUnavailable,
)
from providers.http.errors import error_code_of
from providers.http.response import parse_retry_after, request_id_of


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


class ApiKeyAuth(httpx.Auth):
    """HTTP Basic with the provider's API key and secret on every request."""

    def __init__(self, key: str, secret: str) -> None:
        if not key or not secret:
            raise ValueError("an API key and secret are required")
        self._header = _basic(key, secret)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request

    def __repr__(self) -> str:
        return "ApiKeyAuth(<credentials hidden>)"

    __str__ = __repr__


@dataclass(frozen=True)
class _Token:
    value: str
    refresh_at: float  # clock time after which a new token is fetched
    expires_at: float  # clock time after which this one is no longer sent

    def __repr__(self) -> str:
        return f"_Token(<hidden>, refresh_at={self.refresh_at}, expires_at={self.expires_at})"


# What a finished token request leaves for the requests that waited on it.
_Outcome = _Token | ProviderError | None  # None: the fetch was abandoned (transport error, cancelled)


class ClientCredentialsAuth(httpx.Auth):
    """OAuth2 client credentials (RFC 6749 4.4): a cached bearer token, refreshed by one request at a time.

    The token is refreshed `refresh_margin` seconds before it expires; while one request fetches it,
    the others keep using the old one (still valid) or wait for the new one (expired or rejected).
    A 401 from the API drops the token that failed and retries the request once with a new one.
    The token request goes through the same client and transport as the API request it serves.
    """

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        refresh_margin: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("a client id and secret are required")
        self._token_url = token_url
        self._client_header = _basic(client_id, client_secret)  # client authentication by HTTP Basic
        self._refresh_margin = refresh_margin
        self._clock = clock
        self._token: _Token | None = None
        self._inflight: asyncio.Future[_Outcome] | None = None
        self.token_requests = 0

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(token_url={self._token_url!r}, <credentials hidden>)"

    __str__ = __repr__

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("ClientCredentialsAuth works with httpx.AsyncClient only")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        for attempt in range(2):  # the request, then at most one retry after a 401: never a loop
            token = await self._usable_token()
            if token is None:  # nobody is fetching one: this request does, the others wait on it
                inflight = asyncio.get_running_loop().create_future()
                self._inflight = inflight
                outcome: _Outcome = None
                try:
                    started = self._clock()
                    self.token_requests += 1
                    token_response = yield self._token_request(request)
                    await token_response.aread()
                    token = outcome = self._accept(token_response, started)
                    self._token = token
                except ProviderError as exc:
                    outcome = exc
                    raise
                finally:  # whatever happened, the waiters learn it (a GeneratorExit included)
                    if self._inflight is inflight:
                        self._inflight = None
                    if not inflight.done():
                        inflight.set_result(outcome)
            request.headers["Authorization"] = f"Bearer {token.value}"
            response = yield request
            if response.status_code != 401 or attempt == 1:
                return
            # Revoked or expired early: drop this token, unless another request already replaced it.
            if self._token is token:
                self._token = None

    async def _usable_token(self) -> _Token | None:
        """A token to send, waiting for an in-flight fetch if need be; None: fetch one yourself."""
        while True:
            token, now = self._token, self._clock()
            if token is not None and now < token.refresh_at:
                return token
            if self._inflight is None:
                return None
            if token is not None and now < token.expires_at:
                return token  # being refreshed, still valid: no need to wait
            # shield: a waiter being cancelled must not cancel the fetch the others wait on.
            outcome = await asyncio.shield(self._inflight)
            if isinstance(outcome, ProviderError):
                raise copy.copy(outcome)  # each waiter raises its own instance (tracebacks are per raise)
            if outcome is not None:
                return outcome
            # The fetch was abandoned (its request failed in transit or was cancelled): try again.

    def _token_request(self, request: httpx.Request) -> httpx.Request:
        extensions = {"timeout": request.extensions["timeout"]} if "timeout" in request.extensions else {}
        return httpx.Request(
            "POST",
            request.url.join(self._token_url),
            headers={
                "Authorization": self._client_header,
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            content=urlencode({"grant_type": "client_credentials"}).encode(),
            extensions=extensions,
        )

    def _accept(self, response: httpx.Response, started: float) -> _Token:
        """The token from the token endpoint's answer, or the port error it amounts to."""
        status, request_id = response.status_code, request_id_of(response)
        try:
            body = json.loads(response.content)
        except (ValueError, RecursionError):
            body = None
        if status == 200:
            return self._token_from(body, started, request_id)
        code = error_code_of(body)
        message = f"token endpoint: HTTP {status} ({code or 'no error code'})"
        facts = {"status": status, "request_id": request_id, "maybe_committed": False}
        if status in (400, 401, 403):  # invalid_client and friends: our configuration is wrong
            raise ProviderAuthenticationFailed(message, **facts)
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise ProviderRateLimited(message, retry_after=retry_after, **facts)
        raise ProviderUnavailable(message, retryable=status in (502, 503, 504), **facts)

    def _token_from(self, body: object, started: float, request_id: str | None) -> _Token:
        if isinstance(body, dict):
            value, token_type, expires_in = body.get("access_token"), body.get("token_type"), body.get("expires_in")
            if (
                isinstance(value, str)
                and value
                and isinstance(token_type, str)
                and token_type.lower() == "bearer"
                and isinstance(expires_in, int | float)
                and not isinstance(expires_in, bool)
                and expires_in > 0
            ):
                # Counted from when we asked, not when we heard: the token may be older than it looks.
                margin = min(self._refresh_margin, expires_in / 2)  # a short-lived token is still reused
                return _Token(value, refresh_at=started + expires_in - margin, expires_at=started + expires_in)
        raise ProviderMalformedResponse(
            "token endpoint: the answer is not a bearer token",
            status=200,
            request_id=request_id,
            retryable=False,
            maybe_committed=False,
        )
