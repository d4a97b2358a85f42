"""Tango webhook deliveries: HMAC-SHA256 verification (X-Signed-Payload) and their events in the port's types.

Tango signs the raw body with the subscription's base64 shared secret and sends the base64 digest in
`X-Signed-Payload`. There is no signed timestamp header, so staleness is judged by the signed body's
`eventOccurredAt`; deliveries may arrive out of order, and `revision` tells their order.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timezone

from pydantic import ValidationError

from providers.fulfilment import CatalogEvent, FulfilmentEvent, OrderEvent, OrderStatus, WebhookSignatureInvalid
from providers.tango.wire import EventWire

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signed-Payload"
MIN_SECRET_BYTES = 16
DEFAULT_TOLERANCE = 900.0  # seconds either side of eventOccurredAt
_DIGEST_BYTES = hashlib.sha256().digest_size

ORDER_EVENTS = frozenset({"LineItemDeliveryStatus", "RewardStatus", "AsyncOrderStatus"})
CATALOG_EVENTS = frozenset({"ItemAvailability"})

# Statuses of the order events, upper-cased; anything else (IN_PROGRESS, SHIPPED, RETRYING, a status
# Tango adds later) leaves the order PENDING: the reconciler or a later event settles it.
_SETTLED = {
    "COMPLETE": OrderStatus.FULFILLED,
    "COMPLETED": OrderStatus.FULFILLED,
    "SUCCESSFUL": OrderStatus.FULFILLED,
    "FAILED": OrderStatus.FAILED,
    "CANCELED": OrderStatus.FAILED,
    "CANCELLED": OrderStatus.FAILED,
}


class InvalidTangoEvent(ValueError):
    """The signature holds but the body is not a Tango event: the sender's mistake, answered 400 (a
    ValueError, not a WebhookSignatureInvalid, which is 401: the sender proved who it is)."""


@dataclass(frozen=True, slots=True)
class TangoOrderEvent(OrderEvent):
    """An OrderEvent with Tango's `revision`: a later revision supersedes an earlier one for the same order."""

    revision: int | None = None


@dataclass(frozen=True, slots=True)
class TangoCatalogEvent(CatalogEvent):
    revision: int | None = None


class TangoWebhookVerifier:
    """Checks X-Signed-Payload against one or more base64 secrets (several while rotating)."""

    def __init__(self, secrets: Sequence[str], *, tolerance: float = DEFAULT_TOLERANCE) -> None:
        # No secret: webhooks are off (every delivery is refused); the order reconciler still settles.
        if tolerance <= 0:
            raise ValueError("the staleness tolerance must be positive")
        self._keys = [_key(position, secret) for position, secret in enumerate(secrets, start=1)]
        self._tolerance = tolerance

    def __repr__(self) -> str:
        return f"TangoWebhookVerifier(<{len(self._keys)} secrets hidden>, tolerance={self._tolerance})"

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> list[FulfilmentEvent]:
        self.authenticate(headers, body)
        try:
            event = EventWire.model_validate_json(body)
        except (ValidationError, ValueError):
            # Signed but not an event: the sender proved who it is, the body is its mistake (400, not 401).
            raise InvalidTangoEvent("the signed body is not a Tango event") from None
        occurred = event.eventOccurredAt
        if occurred.tzinfo is None:
            occurred = occurred.replace(tzinfo=timezone.utc)
        now = time.time() if now is None else now
        # Both ways: a replayed old delivery, or one dated far ahead of our clock.
        if abs(occurred.timestamp() - now) > self._tolerance:
            raise WebhookSignatureInvalid("the event is stale (eventOccurredAt outside the tolerance)")
        converted = to_port_event(event)
        return [] if converted is None else [converted]

    def authenticate(self, headers: Mapping[str, str], body: bytes) -> None:
        if not self._keys:
            raise WebhookSignatureInvalid("no Tango webhook secret is configured")
        offered = next((value for name, value in headers.items() if name.lower() == SIGNATURE_HEADER.lower()), "")
        if not offered:
            raise WebhookSignatureInvalid(f"missing {SIGNATURE_HEADER} header")
        try:
            signature = base64.b64decode(offered.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookSignatureInvalid(f"malformed {SIGNATURE_HEADER} header") from None
        if len(signature) != _DIGEST_BYTES:
            raise WebhookSignatureInvalid(f"malformed {SIGNATURE_HEADER} header")
        for key in self._keys:
            # compare_digest: constant time, a forger learns nothing from how long a refusal takes.
            if hmac.compare_digest(hmac.new(key, body, hashlib.sha256).digest(), signature):
                return
        raise WebhookSignatureInvalid("no matching webhook signature")


def sign(secret: str, body: bytes) -> str:
    """The X-Signed-Payload value Tango sends for `body` (tests and the fake server sign with it)."""
    return base64.b64encode(hmac.new(base64.b64decode(secret), body, hashlib.sha256).digest()).decode("ascii")


def to_port_event(event: EventWire) -> FulfilmentEvent | None:
    """The port event of a verified delivery; None for types giftgraph does not act on (ignore them)."""
    data = event.eventData
    kind = event.type_name
    if kind in ORDER_EVENTS:
        reference = _text(data, "externalRefID")
        if reference is None:  # an order we did not place with a reference is not one of ours
            logger.info("tango %s event without externalRefID ignored: event_id=%s", kind, event.eventId)
            return None
        status = _text(data, "status") or _text(data, "lineItemDeliveryStatus") or _text(data, "rewardStatus") or ""
        return TangoOrderEvent(
            event_id=event.eventId,
            reference=reference,
            status=_SETTLED.get(status.upper(), OrderStatus.PENDING),
            order_id=_text(data, "referenceOrderID") or _text(data, "referenceOrderId"),
            revision=event.revision,
        )
    if kind in CATALOG_EVENTS:
        return TangoCatalogEvent(event_id=event.eventId, reward_id=_text(data, "utid"), revision=event.revision)
    return None


def _text(data: Mapping[str, object], key: str) -> str | None:
    value = data.get(key)
    return value if isinstance(value, str) and 0 < len(value) <= 255 else None


def _key(position: int, secret: str) -> bytes:
    try:
        key = base64.b64decode(secret, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) < MIN_SECRET_BYTES:
        # Named by position only: the value must never reach a message.
        raise ValueError(f"Tango webhook secret #{position} is not base64 of at least {MIN_SECRET_BYTES} bytes")
    return key
