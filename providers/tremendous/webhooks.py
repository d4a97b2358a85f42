"""Tremendous webhooks: `Tremendous-Webhook-Signature: sha256=<hex HMAC-SHA256(raw body, webhook private key)>`.

The signature covers the body only (no timestamp), so staleness is judged by the event's own signed
`created_utc`: older than `max_age` (or more than `max_skew` in the future) is rejected. A replay inside
that window is harmless by design: an event is only a nudge; the redemption is settled from the order
Tremendous returns when asked (TremendousProvider.order_for_event), and grants are deduplicated by `uuid`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from providers.fulfilment import CatalogEvent, FulfilmentEvent, OrderEvent, OrderStatus, WebhookSignatureInvalid
from providers.tremendous.wire import WebhookEventWire

SIGNATURE_HEADER = "tremendous-webhook-signature"
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
# What each event says about the order, as a hint only: the order fetched from the API decides.
_ORDER_HINTS = {
    "ORDERS.FAILED": OrderStatus.FAILED,
    "ORDERS.CANCELED": OrderStatus.FAILED,
    "REWARDS.CANCELED": OrderStatus.FAILED,
    "REWARDS.DELIVERY.SUCCEEDED": OrderStatus.FULFILLED,
}


class InvalidTremendousEvent(ValueError):
    """The signature holds but the body is not a Tremendous event: the sender's mistake, answered 400 (a
    ValueError, not a WebhookSignatureInvalid, which is 401: the sender proved who it is)."""


@dataclass(frozen=True, slots=True)
class TremendousOrderEvent(OrderEvent):
    """Tremendous' events name only the resource (an order or a reward id), never our external_id:
    `reference` is "" and the adapter's `order_for_event` fetches the order that carries it."""

    reward_id: str | None = None


class TremendousWebhookVerifier:
    """Checks deliveries against every configured key (several while rotating), then reads the event."""

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        max_age: timedelta = timedelta(hours=1),
        max_skew: timedelta = timedelta(minutes=5),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        # No key: webhooks are off (every delivery is refused); the order reconciler still settles.
        keys = [secret.encode() for secret in secrets]
        for position, key in enumerate(keys, start=1):
            if not key:
                raise ValueError(f"Tremendous webhook key #{position} is empty")
        self._keys = keys
        self._max_age = max_age
        self._max_skew = max_skew
        self._clock = clock

    def __repr__(self) -> str:
        return f"TremendousWebhookVerifier(<{len(self._keys)} keys hidden>)"

    def authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        """WebhookSignatureInvalid unless the body is signed with one of the keys."""
        if not self._keys:
            raise WebhookSignatureInvalid("no Tremendous webhook key is configured")
        value = next((v for name, v in headers.items() if name.lower() == SIGNATURE_HEADER), None)
        if value is None:
            raise WebhookSignatureInvalid("no Tremendous-Webhook-Signature header")
        match = _SIGNATURE.fullmatch(value.strip())
        if match is None:
            raise WebhookSignatureInvalid("malformed Tremendous-Webhook-Signature header")
        given = bytes.fromhex(match.group(1))
        # Every key is tried (no early exit), each compared in constant time.
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), given)
        if not matched:
            raise WebhookSignatureInvalid("the Tremendous webhook signature does not match any key")

    def verify(self, headers: Mapping[str, str], body: bytes) -> list[FulfilmentEvent]:
        """The delivery's events. WebhookSignatureInvalid when unsigned, wrongly signed or outside the accepted
        age; InvalidTremendousEvent when well signed but not a Tremendous event."""
        self.authenticate(headers, body)
        try:
            event = WebhookEventWire.model_validate(json.loads(body))
        except (ValueError, RecursionError, ValidationError):  # the message never quotes the body
            raise InvalidTremendousEvent("the signed body is not a Tremendous event") from None
        created = event.created_utc if event.created_utc.tzinfo else event.created_utc.replace(tzinfo=UTC)
        now = self._clock()
        if created < now - self._max_age or created > now + self._max_skew:
            raise WebhookSignatureInvalid("the Tremendous event is outside the accepted age")
        return _events_of(event)


def _events_of(event: WebhookEventWire) -> list[FulfilmentEvent]:
    name, resource = event.event.upper(), event.payload.resource
    if name.startswith("ORDERS."):
        status = _ORDER_HINTS.get(name, OrderStatus.PENDING)
        return [TremendousOrderEvent(event_id=event.uuid, reference="", status=status, order_id=resource.id)]
    if name.startswith("REWARDS."):
        status = _ORDER_HINTS.get(name, OrderStatus.PENDING)
        return [TremendousOrderEvent(event_id=event.uuid, reference="", status=status, reward_id=resource.id)]
    if name.startswith("PRODUCTS."):
        return [CatalogEvent(event_id=event.uuid, reward_id=resource.id)]
    return []  # FUNDING_SOURCES.*, INVOICES.*, MEMBERS.*... are not ours to act on
