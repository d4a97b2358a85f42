"""The transport under the client: httpx's own or aiohttp's, wrapped to see which request is in flight.

The wrapper is how a failure is known to have happened before our request was sent (while the
auth flow was fetching a token, say) rather than while it was with the provider.
"""

from __future__ import annotations

import functools
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

import httpx

from providers.http.policy import HttpPolicy


@dataclass
class InFlight:
    """One attempt's request, and whether it is the request the transport was last handed."""

    request: httpx.Request | None = None
    sent: bool = False


_attempt: ContextVar[InFlight | None] = ContextVar("provider_http_attempt", default=None)


def track(attempt: InFlight) -> object:
    return _attempt.set(attempt)


def untrack(token: object) -> None:
    _attempt.reset(token)  # type: ignore[arg-type]


class TrackingTransport(httpx.AsyncBaseTransport):
    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        attempt = _attempt.get()
        if attempt is not None:
            # A token request yielded by the auth flow is not ours: a failure there sent nothing.
            attempt.sent = request is attempt.request
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def transport_for(kind: Literal["httpx", "aiohttp"], policy: HttpPolicy) -> httpx.AsyncBaseTransport:
    """The production transport of that kind, with the policy's pool limits; neither resends a request itself."""
    if kind == "aiohttp":
        return _aiohttp_transport_class()(limits=policy.limits(), trust_env=False)
    return httpx.AsyncHTTPTransport(limits=policy.limits(), trust_env=False)


@functools.cache
def _aiohttp_transport_class() -> type[httpx.AsyncBaseTransport]:
    import aiohttp  # imported on demand: aiohttp is heavy
    from httpx_aiohttp import AiohttpTransport

    class OneShotAiohttpTransport(AiohttpTransport):
        """aiohttp resends a GET once when the server closes the connection before answering; retries are
        the client's (counted, budgeted, seen by the breaker), so the session is told not to. aiohttp has no
        public switch for it: its own test client flips the same attribute."""

        def get_client(self) -> aiohttp.ClientSession:
            session = super().get_client()
            session._retry_connection = False
            return session

    return OneShotAiohttpTransport
