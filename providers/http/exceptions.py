"""Foreign exceptions (httpx, aiohttp, the call's deadline) become port errors here, and nowhere else.

FOREIGN_ERRORS and aiohttp_errors() are ordered most specific first; tests raise each class and check
its translation. `reached` says whether the request may have reached the provider when this failure
happened: a connect error or pool timeout proves it did not, a read timeout or a dropped connection
does not. Anything no rule names still becomes a port error (UNMAPPED), so nothing foreign leaves a call.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import httpx

from providers.errors import (
    ProviderConnectionError,
    ProviderError,
    ProviderMalformedResponse,
    ProviderPermanentFailure,
    ProviderTimeout,
    ProviderUnavailable,
)

logger = logging.getLogger(__name__)


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

# What no rule names (a new exception of a library, say): the provider's state is unknown, so it is
# neither retried nor taken as proof that nothing was sent.
UNMAPPED = ForeignRule(Exception, ProviderUnavailable, retry=False, reached=True)


def rule_for(exc: BaseException) -> ForeignRule:
    """The rule for `exc`: aiohttp's own class (raised or disguised by httpx-aiohttp) first, then httpx's."""
    rule = _aiohttp_rule(exc) or next((rule for rule in FOREIGN_ERRORS if isinstance(exc, rule.exception)), None)
    if rule is None:
        # The class name only: a foreign message may quote the URL or what the provider sent.
        logger.warning("no translation rule for %s.%s", type(exc).__module__, type(exc).__qualname__)
        return UNMAPPED
    return rule


def translate(
    exc: BaseException, *, provider: str, operation: str, sent: bool, reading_body: bool = False
) -> ProviderError:
    """The port error for a foreign exception; `sent`: our request had been handed to the transport.

    Raise it `from exc` at the call site, so the cause stays visible to whoever debugs it.
    """
    rule = rule_for(exc)
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
    """aiohttp's exceptions, met two ways. httpx-aiohttp turns every aiohttp ClientConnectionError (a dropped
    connection or a read timeout included) into httpx.ConnectTimeout, which would claim nothing was sent:
    its cause tells the truth. And it re-raises what it has no mapping for (a garbled status line, header
    or chunk is a ClientResponseError) as is."""
    try:
        import aiohttp
        from aiohttp.http_exceptions import HttpProcessingError
    except ImportError:  # pragma: no cover - installed with httpx-aiohttp
        return ()
    return (
        ForeignRule(aiohttp.ConnectionTimeoutError, ProviderTimeout, retry=True, reached=False),
        ForeignRule(aiohttp.ClientConnectorError, ProviderConnectionError, retry=True, reached=False),
        ForeignRule(aiohttp.ClientHttpProxyError, ProviderConnectionError, retry=True, reached=False),
        ForeignRule(aiohttp.ServerTimeoutError, ProviderTimeout, retry=True, reached=True),
        ForeignRule(aiohttp.ClientPayloadError, ProviderMalformedResponse, retry=True, reached=True),
        # The answer's status line, headers or chunk framing do not parse: the provider (or a proxy) answered.
        ForeignRule(aiohttp.ClientResponseError, ProviderMalformedResponse, retry=True, reached=True),
        ForeignRule(HttpProcessingError, ProviderMalformedResponse, retry=True, reached=True),
        ForeignRule(aiohttp.ClientConnectionError, ProviderConnectionError, retry=True, reached=True),
        # Our own request is wrong: repeating it cannot help.
        ForeignRule(aiohttp.InvalidURL, ProviderPermanentFailure, retry=False, reached=False),
        ForeignRule(aiohttp.NonHttpUrlClientError, ProviderPermanentFailure, retry=False, reached=False),
        ForeignRule(aiohttp.ClientError, ProviderConnectionError, retry=True, reached=True),
    )


def _aiohttp_rule(exc: BaseException) -> ForeignRule | None:
    for candidate in (exc, exc.__cause__):
        if candidate is not None and type(candidate).__module__.startswith("aiohttp"):
            return next((rule for rule in aiohttp_errors() if isinstance(candidate, rule.exception)), None)
    return None
