"""Providers that sell cards (GIFTGRAPH_PROVIDER=tremendous|tango), built from Settings on the points ledger."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from giftgraph.rest import http_policy
from giftgraph.settings import ConfigurationError, Settings
from providers.composite import LedgerProvider, SagaTiming
from providers.events import EventHub
from providers.fulfilment import FulfilmentProvider
from providers.http import HttpPolicy, transport_for
from providers.ledger import CardCipher, PointsLedger, load_or_create_keys
from providers.sql import create_engine

CARD_KEYS_FILE = "card-keys.json"


def ledger_provider(settings: Settings, events: EventHub) -> LedgerProvider:
    """The provider factory for tremendous and tango (see giftgraph.app.ProviderFactory)."""
    fulfilment = fulfilment_provider(settings)  # first: its settings errors before any file is written
    ledger, engine = open_ledger(settings)
    return LedgerProvider(
        on_close=engine.dispose,
        ledger=ledger,
        fulfilment=fulfilment,
        events=events,
        timing=SagaTiming(
            funding_ttl=settings.funding_balance_ttl_seconds,
            first_check=first_check(settings),
            # Long enough for the reconciler's look-up and order calls, each within the call budget.
            claim_lease=3 * settings.provider_call_budget_seconds,
            reconcile_interval=settings.reconcile_interval_seconds,
            max_backoff=settings.reconcile_max_backoff_seconds,
        ),
    )


def open_ledger(settings: Settings) -> tuple[PointsLedger, AsyncEngine]:
    """The points ledger on the gateway's database, with the gift-card cipher; the caller disposes the engine."""
    engine = create_engine(settings.gateway_database_url, logging_name="ledger")
    ledger = PointsLedger(
        engine,
        card_cipher(settings),
        starting_balance=settings.ledger_starting_balance,
        first_check_delay=first_check(settings),
    )
    return ledger, engine


def first_check(settings: Settings) -> float:
    """How long a new PENDING redemption is left to its own saga: its order call ends within the call budget,
    so a reconciler that looks only after that never orders beside a saga that is still running."""
    return 2 * settings.provider_call_budget_seconds


def card_cipher(settings: Settings) -> CardCipher:
    keys = [key.get_secret_value() for key in settings.card_encryption_keys]
    if not keys:
        if settings.is_production:
            raise ConfigurationError("GIFTGRAPH_CARD_ENCRYPTION_KEYS is required when GIFTGRAPH_ENV=production")
        keys = load_or_create_keys(Path(settings.data_dir) / CARD_KEYS_FILE)
    try:
        return CardCipher(keys)
    except ValueError as exc:  # names the key's position, never the key
        raise ConfigurationError(f"GIFTGRAPH_CARD_ENCRYPTION_KEYS: {exc}") from None


def fulfilment_provider(settings: Settings) -> FulfilmentProvider:
    policy = http_policy(settings)
    if settings.provider == "tremendous":
        from providers.tremendous import TremendousWebhookVerifier, build_tremendous

        policy = dataclasses.replace(policy, rate_limit_per_second=settings.tremendous_rate_limit_per_second)
        webhook_keys = _secrets(settings.tremendous_webhook_secrets, settings.tremendous_webhook_secret)
        try:
            TremendousWebhookVerifier(webhook_keys)  # checked here, so that the error names the setting
        except ValueError as exc:  # names the key's position in the list, never the key
            raise ConfigurationError(f"GIFTGRAPH_TREMENDOUS_WEBHOOK_SECRETS (or _WEBHOOK_SECRET): {exc}") from None
        return build_tremendous(
            base_url=settings.tremendous_base_url,
            api_key=_required(settings.tremendous_api_key, "GIFTGRAPH_TREMENDOUS_API_KEY"),
            funding_source_id=settings.tremendous_funding_source_id,
            webhook_secrets=webhook_keys,
            policy=policy,
            transport=transport_for(settings.provider_transport, policy),
            countries=settings.tremendous_countries,
            currencies=settings.tremendous_currencies,
        )
    if settings.provider == "tango":
        return tango_provider(
            settings, dataclasses.replace(policy, rate_limit_per_second=settings.tango_rate_limit_per_second)
        )
    raise ConfigurationError(f"GIFTGRAPH_PROVIDER={settings.provider} does not sell gift cards through the ledger")


def tango_provider(settings: Settings, policy: HttpPolicy) -> FulfilmentProvider:
    """Tango from settings. With OAuth2 the token is kept encrypted in the gateway database, where every
    gateway process (and the next start) finds it: Tango issues a client about one token per 20 hours."""
    from providers.ledger.tokens import SqlTokenStore
    from providers.tango import TangoWebhookVerifier, build_tango
    from providers.tango.auth import token_store_name

    oauth = settings.tango_auth == "oauth2"
    # Checked in this order, so that a missing credential is named before anything else.
    platform_name = None if oauth else _required(settings.tango_platform_name, "GIFTGRAPH_TANGO_PLATFORM_NAME")
    platform_key = None if oauth else _required(settings.tango_platform_key, "GIFTGRAPH_TANGO_PLATFORM_KEY")
    client_id = _required(settings.tango_client_id, "GIFTGRAPH_TANGO_CLIENT_ID") if oauth else None
    client_secret = _required(settings.tango_client_secret, "GIFTGRAPH_TANGO_CLIENT_SECRET") if oauth else None
    token_url = _required(settings.tango_token_url, "GIFTGRAPH_TANGO_TOKEN_URL") if oauth else None
    audience = _required(settings.tango_oauth_audience, "GIFTGRAPH_TANGO_OAUTH_AUDIENCE") if oauth else None
    account = _required(settings.tango_account_identifier, "GIFTGRAPH_TANGO_ACCOUNT_IDENTIFIER")
    customer = _required(settings.tango_customer_identifier, "GIFTGRAPH_TANGO_CUSTOMER_IDENTIFIER")
    webhook_secrets = _secrets(settings.tango_webhook_secrets, settings.tango_webhook_secret)
    try:
        TangoWebhookVerifier(webhook_secrets)  # checked here, so that the error names the setting
    except ValueError as exc:  # names the secret's position in the list, never the secret
        raise ConfigurationError(f"GIFTGRAPH_TANGO_WEBHOOK_SECRETS (or _WEBHOOK_SECRET): {exc}") from None
    token_store, on_close = None, None
    if client_id is not None and token_url is not None:  # oauth2; after every check: card_cipher may write
        engine = create_engine(settings.gateway_database_url, logging_name="tango-token")
        name = token_store_name(token_url=token_url, client_id=client_id, audience=audience)
        token_store, on_close = SqlTokenStore(engine, card_cipher(settings), name=name), engine.dispose
    return build_tango(
        base_url=settings.tango_base_url,
        auth_mode=settings.tango_auth,
        platform_name=platform_name,
        platform_key=platform_key,
        client_id=client_id,
        client_secret=client_secret,
        token_url=token_url,
        oauth_audience=audience,
        token_store=token_store,
        account_identifier=account,
        customer_identifier=customer,
        webhook_secrets=webhook_secrets,
        policy=policy,
        transport=transport_for(settings.provider_transport, policy),
        catalog_ttl=settings.tango_catalog_ttl_seconds,
        on_close=on_close,
    )


def _required(value: object, setting: str) -> str:
    if value is None:
        raise ConfigurationError(f"{setting} is required for GIFTGRAPH_PROVIDER=tremendous/tango")
    secret = getattr(value, "get_secret_value", None)
    text = secret() if secret is not None else str(value)
    if not text:
        raise ConfigurationError(f"{setting} must not be empty")
    return text


def _secrets(secrets: list[SecretStr], older: SecretStr | None) -> list[str]:
    """Every configured webhook key (several while rotating), the older singular setting's included, once each."""
    keys = [secret.get_secret_value() for secret in secrets]
    if older is not None and older.get_secret_value() not in keys:
        keys.append(older.get_secret_value())
    return keys
