"""The resilient HTTP layer every networked provider adapter shares: auth, retries, limits, breaker, errors.

Adapters build one ProviderHttpClient per provider and get decoded JSON or a providers.errors
ProviderError back; nothing from httpx, tenacity or json ever escapes a call.
"""

from providers.http.auth import ApiKeyAuth, ClientCredentialsAuth
from providers.http.breaker import BreakerState
from providers.http.client import IDEMPOTENCY_HEADER, HttpStats, ProviderHttpClient
from providers.http.errors import REST_ERRORS, ErrorRule, ErrorTable
from providers.http.policy import HttpPolicy
from providers.http.response import parse_model
from providers.http.transport import transport_for

__all__ = [
    "IDEMPOTENCY_HEADER",
    "REST_ERRORS",
    "ApiKeyAuth",
    "BreakerState",
    "ClientCredentialsAuth",
    "ErrorRule",
    "ErrorTable",
    "HttpPolicy",
    "HttpStats",
    "ProviderHttpClient",
    "parse_model",
    "transport_for",
]
