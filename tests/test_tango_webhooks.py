"""Tango webhook verification (X-Signed-Payload, HMAC-SHA256, base64 secret) and its events in the port's types."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from providers.fulfilment import CatalogEvent, OrderEvent, OrderStatus, WebhookSignatureInvalid
from providers.tango import SIGNATURE_HEADER, TangoWebhookVerifier, sign
from tests.fake_tango import WEBHOOK_SECRET, make_tango

OLD_SECRET = base64.b64encode(b"the-previous-secret-of-32-bytes!").decode()
OTHER_SECRET = base64.b64encode(b"somebody-elses-secret-32-bytes!!").decode()


def delivery(event_type: str = "LineItemDeliveryStatus", *, occurred: datetime | None = None, revision: int = 7,
             **data: Any) -> bytes:  # fmt: skip
    body = {
        "eventId": "evt-1",
        "revision": revision,
        "category": "ORDER",
        "eventType": event_type,
        "eventOccurredAt": (occurred or datetime.now(UTC)).isoformat(),
        "eventData": data or {"externalRefID": "ref0001", "referenceOrderID": "RA000001", "status": "COMPLETED"},
    }
    return json.dumps(body).encode()


def headers(secret: str, body: bytes) -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(secret, body), "Content-Type": "application/json"}


def test_a_good_signature_yields_the_order_event_with_its_revision() -> None:
    body = delivery(revision=42)
    (event,) = make_tango("http://127.0.0.1:9").verify_webhook(headers(WEBHOOK_SECRET, body), body)
    assert isinstance(event, OrderEvent)
    assert (event.event_id, event.reference, event.status, event.order_id) == (
        "evt-1", "ref0001", OrderStatus.FULFILLED, "RA000001"
    )  # fmt: skip
    assert event.revision == 42  # type: ignore[attr-defined]


def test_the_header_name_is_case_insensitive() -> None:
    body = delivery()
    assert TangoWebhookVerifier([WEBHOOK_SECRET]).verify({"x-signed-payload": sign(WEBHOOK_SECRET, body)}, body)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda body: ({SIGNATURE_HEADER: sign(OTHER_SECRET, body)}, body),  # wrong secret
        lambda body: ({SIGNATURE_HEADER: sign(WEBHOOK_SECRET, body)}, body + b" "),  # body changed
        lambda body: ({}, body),  # no signature
        lambda body: ({SIGNATURE_HEADER: "not base64!"}, body),
        lambda body: ({SIGNATURE_HEADER: base64.b64encode(b"short").decode()}, body),
    ],
    ids=["wrong-secret", "tampered-body", "missing", "malformed", "wrong-length"],
)
def test_a_delivery_not_signed_with_our_secret_is_rejected(tamper: Any) -> None:
    sent_headers, body = tamper(delivery())
    with pytest.raises(WebhookSignatureInvalid):
        TangoWebhookVerifier([WEBHOOK_SECRET]).verify(sent_headers, body)


@pytest.mark.parametrize("offset", [timedelta(hours=-1), timedelta(hours=1)], ids=["stale", "future"])
def test_an_event_outside_the_tolerance_is_rejected_even_when_signed(offset: timedelta) -> None:
    body = delivery(occurred=datetime.now(UTC) + offset)
    with pytest.raises(WebhookSignatureInvalid, match="stale"):
        TangoWebhookVerifier([WEBHOOK_SECRET], tolerance=900).verify(headers(WEBHOOK_SECRET, body), body)
    # The same delivery within a wider tolerance is accepted: staleness alone made the difference.
    assert TangoWebhookVerifier([WEBHOOK_SECRET], tolerance=7200).verify(headers(WEBHOOK_SECRET, body), body)


def test_during_rotation_both_secrets_verify_and_a_retired_one_does_not() -> None:
    body = delivery()
    rotating = TangoWebhookVerifier([WEBHOOK_SECRET, OLD_SECRET])
    assert rotating.verify(headers(WEBHOOK_SECRET, body), body)
    assert rotating.verify(headers(OLD_SECRET, body), body)
    with pytest.raises(WebhookSignatureInvalid):
        TangoWebhookVerifier([WEBHOOK_SECRET]).verify(headers(OLD_SECRET, body), body)


@pytest.mark.parametrize(
    ("event_type", "data", "status"),
    [
        ("LineItemDeliveryStatus", {"status": "FAILED"}, OrderStatus.FAILED),
        ("LineItemDeliveryStatus", {"lineItemDeliveryStatus": "SHIPPED"}, OrderStatus.PENDING),
        ("LineItemDeliveryStatus", {"status": "A_STATUS_FROM_THE_FUTURE"}, OrderStatus.PENDING),
        ("RewardStatus", {"status": "CANCELLED"}, OrderStatus.FAILED),
        ("AsyncOrderStatus", {"status": "SUCCESSFUL"}, OrderStatus.FULFILLED),
    ],
)
def test_order_event_statuses_map_and_unknown_ones_stay_pending(
    event_type: str, data: dict[str, str], status: OrderStatus
) -> None:
    body = delivery(event_type, externalRefID="ref0009", **data)
    (event,) = TangoWebhookVerifier([WEBHOOK_SECRET]).verify(headers(WEBHOOK_SECRET, body), body)
    assert isinstance(event, OrderEvent) and (event.reference, event.status) == ("ref0009", status)


def test_item_availability_is_a_catalog_event_and_unknown_types_are_ignored() -> None:
    verifier = TangoWebhookVerifier([WEBHOOK_SECRET])
    body = delivery("ItemAvailability", utid="U000001", status="UNAVAILABLE")
    (event,) = verifier.verify(headers(WEBHOOK_SECRET, body), body)
    assert isinstance(event, CatalogEvent) and event.reward_id == "U000001"
    for ignored in (delivery("LowBalance", balance=3), delivery("LineItemDeliveryStatus", status="COMPLETED")):
        assert verifier.verify(headers(WEBHOOK_SECRET, ignored), ignored) == []  # the second: no externalRefID


@pytest.mark.parametrize(
    "body", [b'{"hello": "world"}', b"not json", b"[]", b'{"eventId": "e", "eventOccurredAt": 1e999}']
)
def test_a_signed_body_that_is_not_an_event_is_invalid_not_unauthenticated(body: bytes) -> None:
    # A ValueError (the receiver's 400), not a WebhookSignatureInvalid (401): the signature held.
    with pytest.raises(ValueError, match="not a Tango event") as caught:
        TangoWebhookVerifier([WEBHOOK_SECRET]).verify(headers(WEBHOOK_SECRET, body), body)
    assert not isinstance(caught.value, WebhookSignatureInvalid)
    assert body.decode() not in str(caught.value)


def test_a_bad_secret_is_refused_at_startup_by_position_never_by_value() -> None:
    with pytest.raises(ValueError, match="secret #2") as caught:
        TangoWebhookVerifier([WEBHOOK_SECRET, "c2hvcnQ="])
    assert "c2hvcnQ=" not in str(caught.value)
    assert WEBHOOK_SECRET not in repr(TangoWebhookVerifier([WEBHOOK_SECRET]))


def test_without_a_secret_every_delivery_is_refused() -> None:
    body = delivery(occurred=datetime.now(UTC))
    with pytest.raises(WebhookSignatureInvalid, match="no Tango webhook secret"):
        TangoWebhookVerifier([]).verify(headers(WEBHOOK_SECRET, body), body)


def test_now_can_be_injected_for_staleness() -> None:
    occurred = datetime(2026, 1, 1, tzinfo=UTC)
    body = delivery(occurred=occurred)
    verifier = TangoWebhookVerifier([WEBHOOK_SECRET], tolerance=60)
    assert verifier.verify(headers(WEBHOOK_SECRET, body), body, now=occurred.timestamp() + 59)
    with pytest.raises(WebhookSignatureInvalid):
        verifier.verify(headers(WEBHOOK_SECRET, body), body, now=occurred.timestamp() + 61)
