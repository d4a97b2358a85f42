"""Provider authentication as httpx.Auth: an API key and secret, or OAuth2 client credentials.

OAuth2 tokens live in a TokenStore (process memory by default; a shared store lets several processes
and restarts use one token). Nothing here ever puts a credential or token in a repr, a log line or an
exception message.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import NamedTuple, Protocol
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

logger = logging.getLogger(__name__)
# After a failed refresh, a still-valid token is used this long before the token endpoint is asked again.
REFRESH_RETRY_SECONDS = 5.0
# An `expires_in` beyond this (about 68 years) is not a real lifetime: the answer is malformed.
MAX_TOKEN_LIFETIME = 2**31 - 1


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
    issued_at: float  # clock time it was asked for: the token endpoint may refuse another before a while
    refresh_at: float  # clock time after which a new token is fetched
    expires_at: float  # clock time after which this one is no longer sent

    def __repr__(self) -> str:
        return f"_Token(<hidden>, refresh_at={self.refresh_at}, expires_at={self.expires_at})"


class StoredToken(NamedTuple):
    """A bearer token as a TokenStore keeps it; times are the auth clock's."""

    value: str
    expires_at: float
    issued_at: float

    def __repr__(self) -> str:
        return f"StoredToken(<hidden>, expires_at={self.expires_at}, issued_at={self.issued_at})"


class TokenStore(Protocol):
    """Where ClientCredentialsAuth keeps its token, and a lease so that one holder at a time refreshes it.

    A store shared by several processes lets them use one token: the endpoint may issue few (Tango: one
    per ~20 h). Times are the auth's clock (wall-clock seconds for a store shared between processes).
    """

    async def load(self) -> StoredToken | None: ...

    async def save(self, token: StoredToken) -> None: ...

    async def acquire_refresh(self, holder: str, *, now: float, until: float) -> bool:
        """True: `holder` may ask the token endpoint until `until` (or release); False: another holds it."""
        ...

    async def release_refresh(self, holder: str) -> None: ...


class MemoryTokenStore:
    """The token in this process only: gone at restart, not shared (the default)."""

    def __init__(self) -> None:
        self._token: StoredToken | None = None
        self._lease: tuple[str, float] | None = None

    def __repr__(self) -> str:
        return "MemoryTokenStore(<hidden>)"

    async def load(self) -> StoredToken | None:
        return self._token

    async def save(self, token: StoredToken) -> None:
        self._token = token

    async def acquire_refresh(self, holder: str, *, now: float, until: float) -> bool:
        if self._lease is not None and self._lease[0] != holder and now < self._lease[1]:
            return False
        self._lease = (holder, until)
        return True

    async def release_refresh(self, holder: str) -> None:
        if self._lease is not None and self._lease[0] == holder:
            self._lease = None


# What a finished token request leaves for the requests that waited on it.
_Outcome = _Token | ProviderError | None  # None: the fetch was abandoned (transport error, cancelled)


class ClientCredentialsAuth(httpx.Auth):
    """OAuth2 client credentials (RFC 6749 4.4): a cached bearer token, refreshed by one request at a time.

    The token is refreshed `refresh_margin` seconds before it expires; while one request fetches it,
    the others keep using the old one (still valid) or wait for the new one (expired or rejected).
    The token lives in a TokenStore (in memory unless one is given): a store shared by several processes
    is read before the token endpoint is asked, and its lease lets one of them ask while the others poll
    the store for what it saves.

    A 401 from the API retries the request once: with a newer token when the store has one, else with a
    new one from the token endpoint, unless the endpoint issues none before `min_reissue_interval` from
    the rejected token's issue (the 401 then stands and the token is kept: asking would only be refused).
    A token request refused as our fault (400/401/403) is not repeated for `refusal_cooldown` seconds.
    The token request goes through the same client and transport as the API request it serves.
    """

    def __init__(
        self,
        *,
        token_url: str,
        client_id: str,
        client_secret: str,
        refresh_margin: float = 30.0,
        store: TokenStore | None = None,
        min_reissue_interval: float = 0.0,
        refusal_cooldown: float = 0.0,
        lease_seconds: float = 30.0,
        lease_wait: float = 10.0,
        poll_interval: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not client_id or not client_secret:
            raise ValueError("a client id and secret are required")
        self._token_url = token_url
        self._client_header = _basic(client_id, client_secret)  # client authentication by HTTP Basic
        self._refresh_margin = refresh_margin
        self._store: TokenStore = store if store is not None else MemoryTokenStore()
        self._min_reissue = min_reissue_interval
        self._refusal_cooldown = refusal_cooldown
        self._lease_seconds = lease_seconds
        self._lease_wait = lease_wait
        self._poll_interval = poll_interval
        self._clock = clock  # wall-clock seconds when the store is shared: times are compared across processes
        self._holder = uuid.uuid4().hex  # this auth's name on the store's refresh lease
        self._token: _Token | None = None
        self._inflight: asyncio.Future[_Outcome] | None = None
        self._quiet_until = float("-inf")  # monotonic: until then a token in its refresh window is just used
        self._refused: tuple[float, ProviderError] | None = None  # (until, the refusal) within the cool-down
        self._dropped: str | None = None  # the last token the API refused and we replace: never taken back
        self.token_requests = 0

    def __repr__(self) -> str:
        return f"ClientCredentialsAuth(token_url={self._token_url!r}, <credentials hidden>)"

    __str__ = __repr__

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("ClientCredentialsAuth works with httpx.AsyncClient only")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        rejected: str | None = None  # the token the API refused in this flow: never sent again by it
        for attempt in range(2):  # the request, then at most one retry after a 401: never a loop
            token = await self._usable_token(rejected)
            if token is None:  # nobody here is fetching one: this request does, the others wait on it
                inflight = asyncio.get_running_loop().create_future()
                self._inflight = inflight
                outcome: _Outcome = None
                try:
                    token = await self._shared_token(rejected)
                    if token is None:  # this auth holds the store's lease: ask the token endpoint
                        try:
                            started = self._clock()
                            self.token_requests += 1
                            token_response = yield self._token_request(request)
                            await token_response.aread()
                            token = self._accepted(token_response, started)
                            # Ours from this moment, before the save: a save cut short (the call's budget,
                            # a cancelled request) must not lose a token the endpoint will not issue again soon.
                            self._token = token
                            await asyncio.shield(self._save(token))
                        finally:
                            await self._release_lease()
                    self._token = outcome = token
                except GeneratorExit:
                    # The token request failed in transit (httpx closes the flow): this attempt fails, and its
                    # retry sends the token in hand if it is still valid, asking again only after a pause.
                    if self._still_valid(self._token, rejected):
                        self._quiet_until = time.monotonic() + REFRESH_RETRY_SECONDS
                    raise
                except ProviderError as exc:
                    fallback = self._token
                    if not self._still_valid(fallback, rejected):
                        # A copy for the waiters: the caller's client marks the raised one with its own call's
                        # facts (maybe_committed), which are not theirs.
                        outcome = copy.copy(exc)
                        raise
                    # The refresh failed but the token in hand is good until it expires: keep sending it (and
                    # let this request's waiters send it too) rather than fail calls a margin early; ask again
                    # after a pause, not on every call.
                    logger.warning(
                        "OAuth token refresh failed; the current token is still valid and used meanwhile",
                        extra={"error": type(exc).__name__},
                    )
                    self._quiet_until = time.monotonic() + REFRESH_RETRY_SECONDS
                    assert fallback is not None
                    token = outcome = fallback
                finally:  # whatever happened, the waiters learn it (a GeneratorExit included)
                    if self._inflight is inflight:
                        self._inflight = None
                    if not inflight.done():
                        inflight.set_result(outcome)
            request.headers["Authorization"] = f"Bearer {token.value}"
            response = yield request
            if response.status_code != 401 or attempt == 1 or not await self._replaceable(token):
                return
            rejected = token.value

    def _still_valid(self, token: _Token | None, rejected: str | None) -> bool:
        return token is not None and token.value != rejected and self._clock() < token.expires_at

    async def _usable_token(self, rejected: str | None) -> _Token | None:
        """A token to send, waiting for an in-flight fetch if need be; None: fetch one yourself."""
        while True:
            token, now = self._token, self._clock()
            if token is not None and token.value == rejected:
                token = None
            if token is not None and now < token.expires_at:
                due = now >= token.refresh_at and time.monotonic() >= self._quiet_until
                # Not due, or being refreshed (still valid: no need to wait): send it.
                return None if due and self._inflight is None else token
            if self._inflight is None:
                return None
            # shield: a waiter being cancelled must not cancel the fetch the others wait on.
            outcome = await asyncio.shield(self._inflight)
            if isinstance(outcome, ProviderError):
                raise copy.copy(outcome)  # each waiter raises its own instance (tracebacks are per raise)
            if outcome is not None and outcome.value != rejected:
                return outcome
            # The fetch was abandoned (its request failed in transit or was cancelled): try again.

    async def _shared_token(self, rejected: str | None) -> _Token | None:
        """The store's token if it will do; None once this auth holds the refresh lease (it then fetches one).

        While another holder fetches, a still-valid token is used meanwhile; without one, the store is
        polled for what the holder saves, for at most `lease_wait` seconds.
        """
        deadline = time.monotonic() + self._lease_wait
        while True:
            now = self._clock()
            stored = await self._stored_token(rejected, now)
            if stored is not None and (now < stored.refresh_at or not self._may_reissue(stored, now)):
                return self._settled(stored, now)
            if self._refused is not None and now < self._refused[0]:
                raise copy.copy(self._refused[1])  # refused a moment ago: asking again would be refused too
            if await self._store.acquire_refresh(self._holder, now=now, until=now + self._lease_seconds):
                # The previous holder may have saved a token between our read and our lease.
                try:
                    fresh = await self._stored_token(rejected, now)
                except BaseException:
                    await self._release_lease()
                    raise
                if fresh is None or now >= fresh.refresh_at:
                    return None
                await self._release_lease()
                return fresh
            current = self._token
            if stored is None and current is not None and current.value != rejected and now < current.expires_at:
                stored = current
            if stored is not None:  # another process is refreshing it; meanwhile this one is still valid
                return self._settled(stored, now)
            if time.monotonic() >= deadline:
                raise ProviderUnavailable(
                    "token endpoint: another process holds the refresh and stored no token in time",
                    retryable=True,
                    maybe_committed=False,
                )
            await asyncio.sleep(self._poll_interval)

    def _settled(self, token: _Token, now: float) -> _Token:
        if now >= token.refresh_at:  # due but not ours to refresh: look at the store again only in a while
            self._quiet_until = time.monotonic() + self._poll_interval
        return token

    async def _replaceable(self, token: _Token) -> bool:
        """After the API refused `token`: whether a retry has a better one to send (the retry then finds it)."""
        now = self._clock()
        current = self._token
        if current is not None and current.value != token.value and now < current.expires_at:
            return True  # another request here replaced it already
        stored = await self._stored_token(token.value, now)
        if stored is not None:  # another process (or this one, earlier) stored a newer one
            self._token = stored
            return True
        if not self._may_reissue(token, now):
            logger.warning(
                "the API refused the OAuth token, and the token endpoint issues no new one until %.0f s after "
                "the last: the token is kept",
                self._min_reissue,
            )
            return False
        self._dropped = token.value  # the store may still hold it: no later request takes it back
        if current is not None and current.value == token.value:
            self._token = None
        return True

    def _may_reissue(self, token: _Token, now: float) -> bool:
        return now - token.issued_at >= self._min_reissue

    async def _stored_token(self, rejected: str | None, now: float) -> _Token | None:
        """The store's token, unless it is the rejected one or has expired."""
        stored = await self._store.load()
        if stored is None or stored.value in (rejected, self._dropped) or now >= stored.expires_at:
            return None
        current = self._token
        if current is not None and current.value == stored.value:
            return current
        return self._token_of(stored.value, issued_at=stored.issued_at, expires_at=stored.expires_at)

    def _token_of(self, value: str, *, issued_at: float, expires_at: float) -> _Token:
        margin = min(self._refresh_margin, (expires_at - issued_at) / 2)  # a short-lived token is still reused
        return _Token(value, issued_at=issued_at, refresh_at=expires_at - margin, expires_at=expires_at)

    async def _save(self, token: _Token) -> None:
        try:
            await self._store.save(StoredToken(token.value, expires_at=token.expires_at, issued_at=token.issued_at))
        except ProviderError as exc:  # the token still serves this process; the others will ask for their own
            logger.warning("the OAuth token could not be stored for reuse: %s", type(exc).__name__)

    async def _release_lease(self) -> None:
        try:
            await self._store.release_refresh(self._holder)
        except ProviderError as exc:  # best effort: an unreleased lease lapses by itself
            logger.warning("the OAuth token refresh lease could not be released: %s", type(exc).__name__)

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

    def _accepted(self, response: httpx.Response, started: float) -> _Token:
        try:
            return self._accept(response, started)
        except ProviderAuthenticationFailed as exc:
            if self._refusal_cooldown > 0:
                self._refused = (self._clock() + self._refusal_cooldown, copy.copy(exc))  # kept unmarked
            raise

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
                and 0 < expires_in <= MAX_TOKEN_LIFETIME
            ):
                # Counted from when we asked, not when we heard: the token may be older than it looks.
                return self._token_of(value, issued_at=started, expires_at=started + expires_in)
        raise ProviderMalformedResponse(
            "token endpoint: the answer is not a bearer token",
            status=200,
            request_id=request_id,
            retryable=False,
            maybe_committed=False,
        )
