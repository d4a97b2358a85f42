"""Tremendous webhook verification: HMAC-SHA256 of the raw body, rotated keys, staleness by `created_utc`."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import pytest

from providers.fulfilment import CatalogEvent, OrderStatus, WebhookSignatureInvalid
from providers.http import HttpPolicy
from providers.tremendous import (
    InvalidTremendousEvent,
    TremendousOrderEvent,
    TremendousWebhookVerifier,
    build_tremendous,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
KEY, OLD_KEY = "whk-current-0123456789", "whk-previous-9876543210"


def body(event: str = "REWARDS.DELIVERY.SUCCEEDED", *, resource: str = "RW1", created: datetime = NOW) -> bytes:
    return json.dumps(
        {
            "event": event,
            "uuid": "5ccc7bb1-7659-4e23-a407-77d8cd9c62f5",
            "created_utc": created.isoformat(),
            "payload": {"resource": {"id": resource, "type": "rewards"}, "meta": {}},
        }
    ).encode()


def signed(raw: bytes, key: str = KEY) -> dict[str, str]:
    return {"Tremendous-Webhook-Signature": "sha256=" + hmac.new(key.encode(), raw, hashlib.sha256).hexdigest()}


def verifier(*keys: str) -> TremendousWebhookVerifier:
    return TremendousWebhookVerifier(list(keys) or [KEY], clock=lambda: NOW)


def test_a_good_signature_yields_the_order_event() -> None:
    raw = body()

    events = verifier().verify(signed(raw), raw)

    assert events == [
        TremendousOrderEvent(
            event_id="5ccc7bb1-7659-4e23-a407-77d8cd9c62f5", reference="", status=OrderStatus.FULFILLED, reward_id="RW1"
        )
    ]


def test_header_names_are_case_insensitive() -> None:
    raw = body()
    (value,) = signed(raw).values()

    assert verifier().verify({"tremendous-webhook-signature": value}, raw)


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ("ORDERS.CREATED", TremendousOrderEvent(event_id="u", reference="", status=OrderStatus.PENDING, order_id="R")),
        ("ORDERS.CANCELED", TremendousOrderEvent(event_id="u", reference="", status=OrderStatus.FAILED, order_id="R")),
        ("REWARDS.DELIVERY.FAILED", TremendousOrderEvent(event_id="u", reference="", status=OrderStatus.PENDING,
                                                         reward_id="R")),
        ("PRODUCTS.UPDATED", CatalogEvent(event_id="u", reward_id="R")),
        ("PRODUCTS.SOMETHING_NEW", CatalogEvent(event_id="u", reward_id="R")),
        ("ORDERS.SOMETHING_NEW", TremendousOrderEvent(event_id="u", reference="", status=OrderStatus.PENDING,
                                                      order_id="R")),
    ],
)
def test_events_map_to_order_and_catalog_events(event: str, expected: object) -> None:
    raw = body(event, resource="R").replace(b"5ccc7bb1-7659-4e23-a407-77d8cd9c62f5", b"u")

    assert verifier().verify(signed(raw), raw) == [expected]


@pytest.mark.parametrize("event", ["FUNDING_SOURCES.FUNDED", "INVOICES.PAID", "SOMETHING.NEW"])
def test_events_that_are_not_ours_are_ignored(event: str) -> None:
    raw = body(event)

    assert verifier().verify(signed(raw), raw) == []


def test_a_signature_with_a_wrong_key_is_rejected() -> None:
    raw = body()

    with pytest.raises(WebhookSignatureInvalid):
        verifier().verify(signed(raw, key="not-the-key"), raw)


def test_a_tampered_body_is_rejected() -> None:
    raw = body()
    headers = signed(raw)

    with pytest.raises(WebhookSignatureInvalid):
        verifier().verify(headers, raw.replace(b"RW1", b"RW2"))


def test_rotated_keys_accept_old_and_new_signatures_but_not_a_removed_key() -> None:
    raw = body()
    rotating = verifier(KEY, OLD_KEY)

    assert rotating.verify(signed(raw, KEY), raw)
    assert rotating.verify(signed(raw, OLD_KEY), raw)
    with pytest.raises(WebhookSignatureInvalid):
        verifier(KEY).verify(signed(raw, OLD_KEY), raw)


@pytest.mark.parametrize(
    "created", [NOW - timedelta(hours=1, seconds=1), NOW + timedelta(minutes=5, seconds=1)], ids=["stale", "future"]
)
def test_an_event_outside_the_accepted_age_is_rejected_even_when_signed(created: datetime) -> None:
    raw = body(created=created)

    with pytest.raises(WebhookSignatureInvalid, match="age"):
        verifier().verify(signed(raw), raw)


def test_an_event_just_inside_the_age_is_accepted() -> None:
    raw = body(created=NOW - timedelta(minutes=59))

    assert verifier().verify(signed(raw), raw)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Tremendous-Webhook-Signature": ""},
        {"Tremendous-Webhook-Signature": "sha1=" + "0" * 64},
        {"Tremendous-Webhook-Signature": "sha256=" + "0" * 63},
        {"Tremendous-Webhook-Signature": "sha256=" + "z" * 64},
        {"Tremendous-Webhook-Signature": "sha256=" + "0" * 64 + ",sha256=" + "1" * 64},
    ],
    ids=["missing", "empty", "other-algorithm", "short", "not-hex", "two-values"],
)
def test_a_malformed_or_missing_header_is_rejected(headers: dict[str, str]) -> None:
    with pytest.raises(WebhookSignatureInvalid):
        verifier().verify(headers, body())


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b'{"event": "ORDERS.CREATED"}', body().replace(b"created_utc", b"created")]
)
def test_a_signed_body_that_is_not_an_event_is_invalid_not_a_crash(raw: bytes) -> None:
    with pytest.raises(InvalidTremendousEvent) as caught:
        verifier().verify(signed(raw), raw)

    assert raw.decode() not in str(caught.value)


def test_keys_never_appear_in_reprs_or_errors() -> None:
    raw = body()
    checker = verifier(KEY, OLD_KEY)

    with pytest.raises(WebhookSignatureInvalid) as caught:
        checker.verify(signed(raw, "wrong"), raw)

    assert KEY not in repr(checker) and OLD_KEY not in repr(checker)
    assert KEY not in str(caught.value)


def test_an_empty_key_is_refused_without_naming_the_keys() -> None:
    with pytest.raises(ValueError, match="#2"):
        TremendousWebhookVerifier([KEY, ""])


def test_without_a_key_every_delivery_is_refused() -> None:
    raw = body()
    with pytest.raises(WebhookSignatureInvalid, match="no Tremendous webhook key"):
        TremendousWebhookVerifier([], clock=lambda: NOW).verify(signed(raw), raw)


def test_the_adapter_verifies_with_the_keys_it_was_built_with() -> None:
    provider = build_tremendous(
        base_url="http://127.0.0.1:9/api/v2",
        api_key="k",
        funding_source_id="balance",
        webhook_secrets=[KEY],
        policy=HttpPolicy(),
    )
    raw = body(created=datetime.now(UTC))

    assert provider.verify_webhook(signed(raw), raw)
    with pytest.raises(WebhookSignatureInvalid):
        provider.verify_webhook(signed(raw, OLD_KEY), raw)
