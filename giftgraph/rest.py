"""The `rest` provider built from Settings: HTTP policy, credentials and transport for `RestProvider`."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from giftgraph.settings import LOOPBACK_HOSTS, ConfigurationError, Settings
from providers.events import EventHub
from providers.http import ApiKeyAuth, ClientCredentialsAuth, HttpPolicy, ProviderHttpClient, transport_for
from providers.rest.adapter import RestProvider

if TYPE_CHECKING:
    from providers.sandbox.credentials import SandboxCredentials

def rest_provider(settings: Settings, events: EventHub) -> RestProvider:
    """The provider factory for GIFTGRAPH_PROVIDER=rest (see giftgraph.app.ProviderFactory)."""
    base_url = _base_url(settings)
    policy = http_policy(settings)
    http = ProviderHttpClient(
        provider=RestProvider.name,
        base_url=base_url,
        auth=provider_auth(settings, base_url),
        policy=policy,
        # httpx's own pool or httpx-aiohttp's, both with the policy's limits, behind the same httpx API.
        transport=transport_for(settings.provider_transport, policy),
    )
    return RestProvider(http=http, events=events)


def http_policy(settings: Settings) -> HttpPolicy:
    return HttpPolicy(
        connect_timeout=settings.provider_connect_timeout,
        read_timeout=settings.provider_read_timeout,
        write_timeout=settings.provider_write_timeout,
        pool_timeout=settings.provider_pool_timeout,
        max_connections=settings.provider_max_connections,
        max_keepalive_connections=settings.provider_max_keepalive_connections,
        rate_limit_per_second=settings.provider_rate_limit_per_second,
        retry_attempts=settings.provider_retry_attempts,
        retry_base_delay=settings.provider_retry_base_delay,
        retry_max_delay=settings.provider_retry_max_delay,
        retry_after_cap=settings.provider_retry_after_cap,
        call_budget_seconds=settings.provider_call_budget_seconds,
        retry_budget_ratio=settings.provider_retry_budget_ratio,
        retry_budget_min_per_second=settings.provider_retry_budget_min_per_second,
        breaker_failure_threshold=settings.provider_breaker_failure_threshold,
        breaker_cooldown_seconds=settings.provider_breaker_cooldown_seconds,
    )


def provider_auth(settings: Settings, base_url: str) -> httpx.Auth:
    """API key + secret (HTTP Basic) or OAuth2 client credentials, from settings only.

    In development, a loopback provider with no credentials configured is taken to be
    `giftgraph sandbox serve` started from the same data folder: both share its generated credentials.
    Errors name the missing setting, never a value.
    """
    if settings.provider_auth == "oauth2":
        client_id = settings.provider_client_id
        client_secret = settings.provider_client_secret.get_secret_value() if settings.provider_client_secret else None
        if client_id is None and client_secret is None and _uses_local_sandbox(settings, base_url):
            credentials = _sandbox_credentials(settings)
            client_id, client_secret = credentials.client_id, credentials.client_secret
        return ClientCredentialsAuth(
            token_url=settings.provider_token_url or f"{base_url}/oauth/token",
            client_id=_require(client_id, "GIFTGRAPH_PROVIDER_CLIENT_ID", "oauth2"),
            client_secret=_require(client_secret, "GIFTGRAPH_PROVIDER_CLIENT_SECRET", "oauth2"),
            refresh_margin=settings.provider_token_refresh_margin_seconds,
        )
    api_key = settings.provider_api_key
    api_secret = settings.provider_api_secret.get_secret_value() if settings.provider_api_secret else None
    if api_key is None and api_secret is None and _uses_local_sandbox(settings, base_url):
        credentials = _sandbox_credentials(settings)
        api_key, api_secret = credentials.api_key, credentials.api_secret
    return ApiKeyAuth(
        _require(api_key, "GIFTGRAPH_PROVIDER_API_KEY", "api_key"),
        _require(api_secret, "GIFTGRAPH_PROVIDER_API_SECRET", "api_key"),
    )


def _base_url(settings: Settings) -> str:
    if not settings.provider_base_url:
        raise ConfigurationError("GIFTGRAPH_PROVIDER_BASE_URL is required when GIFTGRAPH_PROVIDER=rest")
    return settings.provider_base_url.rstrip("/")


def local_sandbox_credentials(settings: Settings) -> SandboxCredentials | None:
    """In development, the generated credentials of a `giftgraph sandbox serve` on loopback that this
    gateway talks to (started from the same data folder); None otherwise."""
    if settings.provider != "rest" or not _uses_local_sandbox(settings, settings.provider_base_url or ""):
        return None
    return _sandbox_credentials(settings)


def _uses_local_sandbox(settings: Settings, base_url: str) -> bool:
    return not settings.is_production and urlsplit(base_url).hostname in LOOPBACK_HOSTS


def _sandbox_credentials(settings: Settings) -> SandboxCredentials:
    from providers.sandbox.credentials import CredentialsError, load_or_create

    try:
        return load_or_create(settings.sandbox_credentials_path)
    except (CredentialsError, OSError) as exc:
        # CredentialsError never quotes a secret; OSError names the path only.
        raise ConfigurationError(f"the local sandbox's credentials cannot be used: {exc}") from None


def _require(value: str | None, setting: str, mode: str) -> str:
    if not value:
        raise ConfigurationError(f"{setting} is required when GIFTGRAPH_PROVIDER_AUTH={mode}")
    return value
