"""Foreign exceptions (httpx, the call's deadline) become port errors here, and nowhere else.

FOREIGN_ERRORS is ordered most specific first; tests raise each class and check its translation.
`reached` says whether the request may have reached the provider when this failure happened:
a connect error or pool timeout proves it did not, a read timeout or a dropped connection does not.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import httpx

from providers.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderMalformedResponse,
    ProviderPermanentFailure,
    ProviderTimeout,
)


@dataclass(frozen=True)
class ForeignRule:
    exception: type[BaseException]
    error: type[ProviderError]
    retry: bool
    reached: bool  # the request may have reached the provider (if it had been handed to the transport)


FOREIGN_ERRORS: tuple[ForeignRule, ...] = (
    ForeignRule(httpx.PoolTimeout, ProviderTimeout, retry=True, reached=False),
    ForeignRule(httpx.ConnectTimeout, ProviderTimeout, retry=True, reached=False),
    ForeignRule(httpx.ReadTimeout, ProviderTimeout, retry=True, reached=True),
    ForeignRule(httpx.WriteTimeout, ProviderTimeout, retry=True, reached=True),
    ForeignRule(httpx.TimeoutException, ProviderTimeout, retry=True, reached=True),
    ForeignRule(TimeoutError, ProviderTimeout, retry=True, reached=True),  # the call budget ran out
    ForeignRule(httpx.ConnectError, ProviderConnectionError, retry=True, reached=False),
    ForeignRule(httpx.ProxyError, ProviderConnectionError, retry=True, reached=False),
    ForeignRule(httpx.RemoteProtocolError, ProviderConnectionError, retry=True, reached=True),
    ForeignRule(httpx.ReadError, ProviderConnectionError, retry=True, reached=True),
    ForeignRule(httpx.WriteError, ProviderConnectionError, retry=True, reached=True),
    ForeignRule(httpx.CloseError, ProviderConnectionError, retry=True, reached=True),
    ForeignRule(httpx.NetworkError, ProviderConnectionError, retry=True, reached=True),
    # Our own request is wrong (bad URL, invalid header): repeating it cannot help.
    ForeignRule(httpx.UnsupportedProtocol, ProviderPermanentFailure, retry=False, reached=False),
    ForeignRule(httpx.LocalProtocolError, ProviderPermanentFailure, retry=False, reached=False),
    ForeignRule(httpx.DecodingError, ProviderMalformedResponse, retry=False, reached=True),
    ForeignRule(httpx.TransportError, ProviderConnectionError, retry=True, reached=True),
    ForeignRule(httpx.TooManyRedirects, ProviderPermanentFailure, retry=False, reached=True),
    ForeignRule(httpx.HTTPError, ProviderPermanentFailure, retry=False, reached=True),
    ForeignRule(httpx.InvalidURL, ProviderPermanentFailure, retry=False, reached=False),
    ForeignRule(httpx.StreamError, ProviderPermanentFailure, retry=False, reached=True),
)

FOREIGN_TYPES: tuple[type[BaseException], ...] = tuple(rule.exception for rule in FOREIGN_ERRORS)


def rule_for(exc: BaseException) -> ForeignRule:
    for rule in FOREIGN_ERRORS:
        if isinstance(exc, rule.exception):
            return rule
    raise TypeError(f"no translation for {type(exc).__name__}")  # only FOREIGN_TYPES are passed in


def translate(
    exc: BaseException, *, provider: str, operation: str, sent: bool, reading_body: bool = False
) -> ProviderError:
    """The port error for a foreign exception; `sent`: our request had been handed to the transport.

    Raise it `from exc` at the call site, so the cause stays visible to whoever debugs it.
    """
    rule = _aiohttp_rule(exc) or rule_for(exc)
    error = rule.error
    if isinstance(exc, httpx.RemoteProtocolError) and reading_body:
        error = ProviderMalformedResponse  # the status line came, then the body was cut short
    what = "the call's time budget ran out" if type(exc) is TimeoutError else type(exc).__name__
    return error(
        f"{provider} {operation}: {what}",
        provider=provider,
        retryable=rule.retry,
        maybe_committed=rule.reached and sent,
    )


@functools.cache
def aiohttp_errors() -> tuple[ForeignRule, ...]:
    """httpx-aiohttp turns every aiohttp ClientConnectionError (a dropped connection or a read timeout
    included) into httpx.ConnectTimeout, which would claim nothing was sent; its cause tells the truth."""
    try:
        import aiohttp
    except ImportError:  # pragma: no cover - installed with httpx-aiohttp
        return ()
    return (
        ForeignRule(aiohttp.ConnectionTimeoutError, ProviderTimeout, retry=True, reached=False),
        ForeignRule(aiohttp.ClientConnectorError, ProviderConnectionError, retry=True, reached=False),
        ForeignRule(aiohttp.ServerTimeoutError, ProviderTimeout, retry=True, reached=True),
        ForeignRule(aiohttp.ClientPayloadError, ProviderMalformedResponse, retry=True, reached=True),
        ForeignRule(aiohttp.ClientConnectionError, ProviderConnectionError, retry=True, reached=True),
    )


def _aiohttp_rule(exc: BaseException) -> ForeignRule | None:
    cause = exc.__cause__
    if cause is None or not type(cause).__module__.startswith("aiohttp"):
        return None
    return next((rule for rule in aiohttp_errors() if isinstance(cause, rule.exception)), None)
