"""Providers that sell cards (GIFTGRAPH_PROVIDER=tremendous|tango), built from Settings on the points ledger."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from giftgraph.rest import http_policy
from giftgraph.settings import ConfigurationError, Settings
from providers.composite import LedgerProvider, SagaTiming
from providers.events import EventHub
from providers.fulfilment import FulfilmentProvider
from providers.http import transport_for
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
            # A saga's own order call ends within its budget; only then may the reconciler look.
            first_check=2 * settings.provider_call_budget_seconds,
            reconcile_interval=settings.reconcile_interval_seconds,
            max_backoff=settings.reconcile_max_backoff_seconds,
        ),
    )


def open_ledger(settings: Settings) -> tuple[PointsLedger, AsyncEngine]:
    """The points ledger on the gateway's database, with the gift-card cipher; the caller disposes the engine."""
    engine = create_engine(settings.database_url, logging_name="ledger")
    return PointsLedger(engine, card_cipher(settings), starting_balance=settings.ledger_starting_balance), engine


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
        from providers.tremendous import build_tremendous

        policy = dataclasses.replace(policy, rate_limit_per_second=settings.tremendous_rate_limit_per_second)
        return build_tremendous(
            base_url=settings.tremendous_base_url,
            api_key=_required(settings.tremendous_api_key, "GIFTGRAPH_TREMENDOUS_API_KEY"),
            funding_source_id=settings.tremendous_funding_source_id,
            webhook_secrets=_secrets(settings.tremendous_webhook_secret),
            policy=policy,
            transport=transport_for(settings.provider_transport, policy),
        )
    if settings.provider == "tango":
        from providers.tango import build_tango

        policy = dataclasses.replace(policy, rate_limit_per_second=settings.tango_rate_limit_per_second)
        basic = settings.tango_auth == "basic"
        return build_tango(
            base_url=settings.tango_base_url,
            auth_mode=settings.tango_auth,
            platform_name=_required(settings.tango_platform_name, "GIFTGRAPH_TANGO_PLATFORM_NAME") if basic else None,
            platform_key=_required(settings.tango_platform_key, "GIFTGRAPH_TANGO_PLATFORM_KEY") if basic else None,
            client_id=None if basic else _required(settings.tango_client_id, "GIFTGRAPH_TANGO_CLIENT_ID"),
            client_secret=None if basic else _required(settings.tango_client_secret, "GIFTGRAPH_TANGO_CLIENT_SECRET"),
            token_url=settings.tango_token_url,
            account_identifier=_required(settings.tango_account_identifier, "GIFTGRAPH_TANGO_ACCOUNT_IDENTIFIER"),
            customer_identifier=_required(settings.tango_customer_identifier, "GIFTGRAPH_TANGO_CUSTOMER_IDENTIFIER"),
            webhook_secrets=_secrets(settings.tango_webhook_secret),
            policy=policy,
            transport=transport_for(settings.provider_transport, policy),
        )
    raise ConfigurationError(f"GIFTGRAPH_PROVIDER={settings.provider} does not sell gift cards through the ledger")


def _required(value: object, setting: str) -> str:
    if value is None:
        raise ConfigurationError(f"{setting} is required for GIFTGRAPH_PROVIDER=tremendous/tango")
    secret = getattr(value, "get_secret_value", None)
    text = secret() if secret is not None else str(value)
    if not text:
        raise ConfigurationError(f"{setting} must not be empty")
    return text


def _secrets(value: object) -> list[str]:
    secret = getattr(value, "get_secret_value", None)
    return [] if secret is None else [secret()]
