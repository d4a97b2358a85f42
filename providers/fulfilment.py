"""The fulfilment port: what a gift-card seller (Tremendous, Tango Card...) does for giftgraph.

Such providers sell cards against a funded company account and keep no user points; giftgraph's
own points ledger debits the user and a `FulfilmentProvider` supplies the catalog and the cards.
Adapters translate their provider's API into these calls and raise the errors of providers.errors.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from providers.base import GiftCard, Reward


class OrderStatus(enum.Enum):
    PENDING = "PENDING"  # accepted; the card comes later (a webhook, or a later lookup)
    FULFILLED = "FULFILLED"
    FAILED = "FAILED"  # definitely not delivered: the user's points are refunded


@dataclass(frozen=True, slots=True)
class FundingBalance:
    """The company account the provider charges (never a user's points)."""

    available: Decimal
    currency_code: str


@dataclass(frozen=True, slots=True)
class OrderRequest:
    reference: str  # our idempotency reference: Tremendous external_id, Tango externalRefID (<= 100, [A-Za-z0-9])
    reward_id: str  # the provider's product / utid
    face_value: Decimal
    currency_code: str
    recipient_name: str  # who the card is for; giftgraph sends its user id, never an email it does not have
    recipient_email: str | None = None


@dataclass(frozen=True, slots=True)
class Order:
    reference: str
    order_id: str  # the provider's own id
    status: OrderStatus
    reward_id: str
    face_value: Decimal
    currency_code: str
    gift_card: GiftCard | None  # set when FULFILLED
    failure_reason: str | None
    created_at: datetime

    def __repr__(self) -> str:  # never let a card reach a log line through repr()
        return f"Order({self.reference!r}, {self.order_id!r}, {self.status.value})"


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """A verified webhook about an order: settle the redemption with this reference."""

    event_id: str
    reference: str
    status: OrderStatus
    order_id: str | None = None


@dataclass(frozen=True, slots=True)
class CatalogEvent:
    """A verified webhook saying the catalog changed (a product's stock, price or status)."""

    event_id: str
    reward_id: str | None


FulfilmentEvent = OrderEvent | CatalogEvent


class WebhookSignatureInvalid(Exception):
    """The webhook is not proven to come from the provider (missing, malformed or wrong signature, stale)."""


class FulfilmentProvider(Protocol):
    """A gift-card seller. Every method may raise ProviderError (providers/errors.py)."""

    name: str

    async def start(self) -> None:
        """Open the HTTP client (ProviderHttpClient.start)."""

    async def aclose(self) -> None:
        """Close what start() opened."""

    async def catalog(self) -> list[Reward]:
        """The whole catalog mapped to rewards, in a stable order (ids are the provider's product ids)."""

    async def funding_balance(self) -> FundingBalance:
        """What the company account can still pay for."""

    async def place_order(self, request: OrderRequest) -> Order:
        """Order one card, idempotently by `request.reference`: the same reference never orders twice."""

    async def find_order(self, reference: str) -> Order | None:
        """The order placed under `reference`, or None when the provider has none."""

    async def order_for_event(self, event: OrderEvent) -> Order | None:
        """The order a webhook event is about, read live (some providers' events carry only their own ids)."""

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> list[FulfilmentEvent]:
        """The events of a webhook delivery; WebhookSignatureInvalid unless it is proven genuine."""
