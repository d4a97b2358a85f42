"""Standard Webhooks for the REST contract: prove a delivery came from the provider, then read it as a domain event.

The `standardwebhooks` package decodes the `whsec_` secrets and computes the HMAC; the headers, the
timestamp tolerance and the comparison are checked here, because the package hard-codes a 5-minute
tolerance against the wall clock and raises ValueError/binascii.Error on malformed signature entries.

WebhookRejected             the delivery is not proven to come from the provider (missing, malformed or
│                           wrong signature; timestamp outside the tolerance): answer 401
└── InvalidWebhookEvent     signed, but the body is not a valid event of the contract: answer 400
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from pydantic import ValidationError
from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from providers.base import Balance, Redemption, RedemptionStatus, RewardAvailability
from providers.rest.contract import (
    CatalogItemChangedData,
    PointsEarnedData,
    RedemptionSettledData,
    WebhookEventWire,
)

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SIGNATURE_VERSION = "v1"
SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24  # the specification's secrets are 24 to 64 random bytes
MAX_SIGNATURES = 16  # entries per header: enough for any rotation, bounded work per delivery
_SIGNATURE_BYTES = hashlib.sha256().digest_size
# The id is stored and logged: printable ASCII without spaces, bounded like every other id.
_WEBHOOK_ID = re.compile(r"[\x21-\x7e]{1,255}")
# Unix seconds exactly as the sender wrote them: the signed content quotes the header verbatim,
# so "0123" or "12.0" (which the package would re-render differently) are malformed, not re-read.
_TIMESTAMP = re.compile(r"0|[1-9][0-9]{0,11}")


class WebhookRejected(Exception):
    """The delivery is not proven to come from the provider; the message never quotes a secret or the body."""


class InvalidWebhookEvent(WebhookRejected):
    """The signature holds, but the body is not an event of the contract."""


# The events, in the port's types


@dataclass(frozen=True, slots=True)
class PointsEarned:
    """Points credited in the provider's ledger (outside the app); `balance` is the ledger's after the credit."""

    user_id: str
    points: int
    transaction_id: str
    balance: Balance


@dataclass(frozen=True, slots=True)
class RedemptionSettled:
    """A redemption reached FULFILLED or FAILED (refunded); the event carries no gift card."""

    redemption: Redemption
    balance: Balance


@dataclass(frozen=True, slots=True)
class CatalogItemChanged:
    reward_id: str
    availability: RewardAvailability


WebhookData = PointsEarned | RedemptionSettled | CatalogItemChanged


@dataclass(frozen=True, slots=True)
class ProviderWebhook:
    id: str  # webhook-id: the same on every retry of one event
    type: str
    occurred_at: datetime
    data: WebhookData | None  # None: a type this gateway does not know (providers add types); ignore it


# Verification


class WebhookVerifier:
    """Checks deliveries against one or more secrets (several while rotating) and a timestamp tolerance."""

    def __init__(self, secrets: Sequence[str], *, tolerance: float) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is needed")
        if tolerance <= 0:
            raise ValueError("the timestamp tolerance must be positive")
        self._signers = [_signer(position, secret) for position, secret in enumerate(secrets, start=1)]
        self._tolerance = tolerance

    def verify(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> ProviderWebhook:
        """The event of a delivery whose signature holds; WebhookRejected (or InvalidWebhookEvent) otherwise."""
        webhook_id = self.authenticate(headers, body, now=now)
        return parse_event(webhook_id, body)

    def authenticate(self, headers: Mapping[str, str], body: bytes, *, now: float | None = None) -> str:
        """The webhook id of a delivery signed with one of the secrets within the tolerance."""
        lowered = {name.lower(): value for name, value in headers.items()}
        webhook_id = lowered.get(ID_HEADER, "")
        timestamp = lowered.get(TIMESTAMP_HEADER, "")
        signatures = lowered.get(SIGNATURE_HEADER, "")
        if not (webhook_id and timestamp and signatures):
            raise WebhookRejected("missing webhook-id, webhook-timestamp or webhook-signature header")
        if not _WEBHOOK_ID.fullmatch(webhook_id):
            raise WebhookRejected("malformed webhook-id header")
        if not _TIMESTAMP.fullmatch(timestamp):
            raise WebhookRejected("malformed webhook-timestamp header")
        sent_at = int(timestamp)
        now = time.time() if now is None else now
        # Both directions: a replay of an old delivery, or a clock far ahead of ours.
        if sent_at < now - self._tolerance:
            raise WebhookRejected("webhook timestamp too old")
        if sent_at > now + self._tolerance:
            raise WebhookRejected("webhook timestamp too new")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            # JSON is UTF-8 (RFC 8259), and the package signs text: such a body cannot be verified.
            raise WebhookRejected("webhook body is not UTF-8") from None
        offered = _offered_signatures(signatures)
        signed_at = datetime.fromtimestamp(sent_at, tz=timezone.utc)
        for signer in self._signers:
            expected = _signature_bytes(signer.sign(webhook_id, signed_at, text))
            # compare_digest: constant time, so a forger learns nothing from how long a refusal takes.
            if any(hmac.compare_digest(expected, candidate) for candidate in offered):
                return webhook_id
        raise WebhookRejected("no matching webhook signature")


def verify_webhook(
    secrets: Sequence[str], headers: Mapping[str, str], body: bytes, *, tolerance: float, now: float | None = None
) -> ProviderWebhook:
    """One delivery checked and read: see WebhookVerifier.verify."""
    return WebhookVerifier(secrets, tolerance=tolerance).verify(headers, body, now=now)


def _signer(position: int, secret: str) -> Webhook:
    # Stricter than the package, which skips stray characters and takes a 2-byte key: a typo
    # or a truncated secret fails at startup instead of making every delivery fail (or pass weakly).
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        if len(key) < MIN_SECRET_BYTES:
            raise ValueError("too short")
        return Webhook(key)
    except (EmptyWebhookSecretError, binascii.Error, ValueError):
        # Name the secret by position only: its value must never reach a message.
        raise ValueError(
            f"webhook secret #{position} is not a whsec_ base64 secret of at least {MIN_SECRET_BYTES} bytes"
        ) from None


def _offered_signatures(header: str) -> list[bytes]:
    """The v1 signatures of a webhook-signature header; malformed entries and other versions are skipped
    (they can never match), so one bad entry does not hide a good one."""
    entries = header.split()
    if len(entries) > MAX_SIGNATURES:
        raise WebhookRejected("too many webhook signatures")
    offered = []
    for entry in entries:
        version, separator, encoded = entry.partition(",")
        if version != SIGNATURE_VERSION or not separator:
            continue
        try:
            decoded = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(decoded) == _SIGNATURE_BYTES:
            offered.append(decoded)
    return offered


def _signature_bytes(signature: str) -> bytes:
    return base64.b64decode(signature.partition(",")[2])


# Parsing


def parse_event(webhook_id: str, body: bytes) -> ProviderWebhook:
    """The body of a verified delivery as a domain event; InvalidWebhookEvent when it is not one."""
    try:
        envelope = WebhookEventWire.model_validate_json(body)
    except (ValidationError, ValueError):
        raise InvalidWebhookEvent("the webhook body is not an event: {type, timestamp, data}") from None
    occurred_at = envelope.timestamp
    if occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=timezone.utc)
    try:
        data = _data_of(envelope.type, envelope.data)
    except ValidationError:
        raise InvalidWebhookEvent(f"the data of a {envelope.type} event is not valid") from None
    return ProviderWebhook(id=webhook_id, type=envelope.type, occurred_at=occurred_at, data=data)


_SETTLED_STATUS = {"redemption.fulfilled": RedemptionStatus.FULFILLED, "redemption.failed": RedemptionStatus.FAILED}


def _data_of(event_type: str, data: dict[str, object]) -> WebhookData | None:
    if event_type == "points.earned":
        earned = PointsEarnedData.model_validate(data)
        if earned.balance.user_id != earned.user_id:
            raise InvalidWebhookEvent("a points.earned event's balance belongs to another user")
        return PointsEarned(
            user_id=earned.user_id,
            points=earned.points,
            transaction_id=earned.transaction_id,
            balance=earned.balance.to_domain(),
        )
    if event_type in _SETTLED_STATUS:
        settled = RedemptionSettledData.model_validate(data)
        redemption = settled.redemption.to_domain()
        if redemption.status is not _SETTLED_STATUS[event_type]:
            raise InvalidWebhookEvent(f"a {event_type} event carries a {redemption.status.value} redemption")
        if settled.balance.user_id != redemption.user_id:
            raise InvalidWebhookEvent(f"a {event_type} event's balance belongs to another user")
        return RedemptionSettled(redemption=redemption, balance=settled.balance.to_domain())
    if event_type == "catalog.item_changed":
        changed = CatalogItemChangedData.model_validate(data)
        return CatalogItemChanged(reward_id=changed.reward_id, availability=RewardAvailability(changed.availability))
    return None


__all__ = [
    "CatalogItemChanged",
    "InvalidWebhookEvent",
    "PointsEarned",
    "ProviderWebhook",
    "RedemptionSettled",
    "WebhookData",
    "WebhookRejected",
    "WebhookVerifier",
    "parse_event",
    "verify_webhook",
]
