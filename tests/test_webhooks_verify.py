"""Standard Webhooks verification and event parsing (providers/rest/webhooks.py), without a network."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from providers import Balance, GiftCard, Redemption, RedemptionStatus, RewardAvailability
from providers.rest.contract import BalanceWire, RedemptionWire
from providers.rest.webhooks import (
    CatalogItemChanged,
    InvalidWebhookEvent,
    PointsEarned,
    RedemptionSettled,
    WebhookRejected,
    WebhookVerifier,
    verify_webhook,
)

# The Standard Webhooks specification's published test vector (the same in every reference library).
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TIMESTAMP = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"x" * 32).decode()
NOW = 1_700_000_000
TOLERANCE = 300


def vector_headers(**overrides: str) -> dict[str, str]:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TIMESTAMP),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    headers.update(overrides)
    return headers


def sign(secret: str, body: bytes, *, webhook_id: str = "msg_1", timestamp: int = NOW) -> str:
    """A signature made by the standardwebhooks package, as a sender would."""
    return Webhook(secret).sign(webhook_id, datetime.fromtimestamp(timestamp, tz=timezone.utc), body.decode())


def signed_headers(secret: str, body: bytes, *, webhook_id: str = "msg_1", timestamp: int = NOW) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, body, webhook_id=webhook_id, timestamp=timestamp),
    }


def event_body(event_type: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"type": event_type, "timestamp": "2024-05-01T12:00:00Z", "data": data}).encode()


WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
BALANCE = Balance(user_id="u1", available=10_500, pending=0, updated_at=WHEN)


def a_redemption(status: RedemptionStatus, *, user_id: str = "u1") -> Redemption:
    return Redemption(
        id="red_1",
        user_id=user_id,
        reward_id="rw_1",
        face_value=Decimal("25.00"),
        currency_code="USD",
        points=2500,
        status=status,
        gift_card=None,
        failure_reason="out of stock" if status is RedemptionStatus.FAILED else None,
        created_at=WHEN - timedelta(seconds=5),
        updated_at=WHEN,
    )


def settled_data(redemption: Redemption, balance: Balance = BALANCE) -> dict[str, Any]:
    return {
        "redemption": RedemptionWire.of(redemption).model_dump(mode="json"),
        "balance": BalanceWire.of(balance).model_dump(mode="json"),
    }


# The published test vector


def test_given_the_spec_test_vector_when_the_package_signs_it_then_it_gives_the_published_signature() -> None:
    signed = Webhook(VECTOR_SECRET).sign(
        VECTOR_ID, datetime.fromtimestamp(VECTOR_TIMESTAMP, tz=timezone.utc), VECTOR_BODY.decode()
    )

    assert signed == VECTOR_SIGNATURE


def test_given_the_spec_test_vector_when_verified_at_its_timestamp_then_it_is_accepted() -> None:
    verifier = WebhookVerifier([VECTOR_SECRET], tolerance=TOLERANCE)

    assert verifier.authenticate(vector_headers(), VECTOR_BODY, now=VECTOR_TIMESTAMP) == VECTOR_ID


@pytest.mark.parametrize(
    "change",
    ["body", "id", "timestamp", "signature"],
)
def test_given_the_spec_test_vector_when_any_signed_part_changes_then_it_is_rejected(change: str) -> None:
    verifier = WebhookVerifier([VECTOR_SECRET], tolerance=TOLERANCE)
    body, headers = VECTOR_BODY, vector_headers()
    if change == "body":
        body = b'{"test": 2432232315}'
    elif change == "id":
        headers["webhook-id"] = VECTOR_ID + "x"
    elif change == "timestamp":
        headers["webhook-timestamp"] = str(VECTOR_TIMESTAMP + 1)
    else:
        headers["webhook-signature"] = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="

    with pytest.raises(WebhookRejected, match="no matching webhook signature"):
        verifier.authenticate(headers, body, now=VECTOR_TIMESTAMP)


def test_given_header_names_in_any_case_when_verified_then_they_are_found() -> None:
    headers = {name.upper(): value for name, value in vector_headers().items()}

    assert WebhookVerifier([VECTOR_SECRET], tolerance=TOLERANCE).authenticate(
        headers, VECTOR_BODY, now=VECTOR_TIMESTAMP
    ) == VECTOR_ID


# Rotation: several secrets, several signatures


@pytest.mark.parametrize("signing_secret", [OLD_SECRET, NEW_SECRET])
def test_given_two_secrets_while_rotating_when_either_signed_then_it_is_accepted(signing_secret: str) -> None:
    verifier = WebhookVerifier([OLD_SECRET, NEW_SECRET], tolerance=TOLERANCE)
    body = b'{"a": 1}'

    assert verifier.authenticate(signed_headers(signing_secret, body), body, now=NOW) == "msg_1"


def test_given_a_secret_not_configured_when_it_signed_then_it_is_rejected() -> None:
    verifier = WebhookVerifier([OLD_SECRET, NEW_SECRET], tolerance=TOLERANCE)
    body = b'{"a": 1}'

    with pytest.raises(WebhookRejected, match="no matching webhook signature"):
        verifier.authenticate(signed_headers(OTHER_SECRET, body), body, now=NOW)


def test_given_several_signatures_when_one_is_made_with_a_configured_secret_then_it_is_accepted() -> None:
    verifier = WebhookVerifier([NEW_SECRET], tolerance=TOLERANCE)
    body = b'{"a": 1}'
    headers = signed_headers(NEW_SECRET, body)
    headers["webhook-signature"] = f"{sign(OTHER_SECRET, body)} {sign(NEW_SECRET, body)}"

    assert verifier.authenticate(headers, body, now=NOW) == "msg_1"


@pytest.mark.parametrize("bad_entry", ["v1", "v1,", "v1,!!!", "v1,abc", "v1,a,b", ",xyz", "garbage", "v1,AAAA"])
def test_given_a_malformed_entry_beside_a_good_one_when_verified_then_the_good_one_still_counts(bad_entry: str) -> None:
    verifier = WebhookVerifier([NEW_SECRET], tolerance=TOLERANCE)
    body = b'{"a": 1}'
    headers = signed_headers(NEW_SECRET, body)
    headers["webhook-signature"] = f"{bad_entry}  {headers['webhook-signature']}"

    assert verifier.authenticate(headers, body, now=NOW) == "msg_1"


def test_given_the_right_signature_under_another_version_when_verified_then_it_is_rejected() -> None:
    verifier = WebhookVerifier([NEW_SECRET], tolerance=TOLERANCE)
    body = b'{"a": 1}'
    headers = signed_headers(NEW_SECRET, body)
    headers["webhook-signature"] = headers["webhook-signature"].replace("v1,", "v2,", 1)

    with pytest.raises(WebhookRejected):
        verifier.authenticate(headers, body, now=NOW)


# Tolerance, both directions, configurable


@pytest.mark.parametrize("tolerance", [10, 300])
@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_given_a_tolerance_when_the_timestamp_is_at_its_edge_then_it_is_accepted_and_beyond_rejected(
    tolerance: int, offset: int
) -> None:
    verifier = WebhookVerifier([NEW_SECRET], tolerance=tolerance)
    body = b"{}"
    old = signed_headers(NEW_SECRET, body, timestamp=NOW - tolerance + offset)
    new = signed_headers(NEW_SECRET, body, timestamp=NOW + tolerance - offset)

    if offset >= 0:
        assert verifier.authenticate(old, body, now=NOW) == "msg_1"
        assert verifier.authenticate(new, body, now=NOW) == "msg_1"
    else:
        with pytest.raises(WebhookRejected, match="too old"):
            verifier.authenticate(old, body, now=NOW)
        with pytest.raises(WebhookRejected, match="too new"):
            verifier.authenticate(new, body, now=NOW)


def test_given_no_clock_when_verifying_then_the_wall_clock_is_used() -> None:
    verifier = WebhookVerifier([VECTOR_SECRET], tolerance=TOLERANCE)

    with pytest.raises(WebhookRejected, match="too old"):
        verifier.authenticate(vector_headers(), VECTOR_BODY)


# Malformed headers and bodies


@pytest.mark.parametrize(
    "overrides",
    [
        {"webhook-id": ""},
        {"webhook-timestamp": ""},
        {"webhook-signature": ""},
        {"webhook-id": "msg with space"},
        {"webhook-id": "m" * 256},
        {"webhook-id": "msg_é"},
        {"webhook-timestamp": "abc"},
        {"webhook-timestamp": "1614265330.0"},
        {"webhook-timestamp": "-1614265330"},
        {"webhook-timestamp": "01614265330"},
        {"webhook-timestamp": "9" * 40},
        {"webhook-signature": "v1"},
        {"webhook-signature": "v1,"},
        {"webhook-signature": "v1,not base64!"},
        {"webhook-signature": "v1,abc"},
        {"webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE"},
        {"webhook-signature": "v1,,,,"},
        {"webhook-signature": " ".join([VECTOR_SIGNATURE] * 17)},
        {"webhook-signature": "\x00\x01"},
    ],
    ids=lambda overrides: repr(overrides)[:60],
)
def test_given_a_malformed_header_when_verified_then_it_is_rejected_never_another_error(
    overrides: dict[str, str],
) -> None:
    verifier = WebhookVerifier([VECTOR_SECRET], tolerance=TOLERANCE)

    with pytest.raises(WebhookRejected):
        verifier.authenticate(vector_headers(**overrides), VECTOR_BODY, now=VECTOR_TIMESTAMP)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_given_a_missing_header_when_verified_then_it_is_rejected(missing: str) -> None:
    headers = vector_headers()
    del headers[missing]

    with pytest.raises(WebhookRejected, match="missing"):
        WebhookVerifier([VECTOR_SECRET], tolerance=TOLERANCE).authenticate(headers, VECTOR_BODY, now=VECTOR_TIMESTAMP)


def test_given_a_body_that_is_not_utf8_when_verified_then_it_is_rejected() -> None:
    with pytest.raises(WebhookRejected, match="UTF-8"):
        WebhookVerifier([VECTOR_SECRET], tolerance=TOLERANCE).authenticate(
            vector_headers(), b"\xff\xfe{}", now=VECTOR_TIMESTAMP
        )


@given(
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "other"]), st.text(max_size=80)
    ),
    body=st.binary(max_size=200),
)
@settings(max_examples=300, deadline=None)
def test_given_any_headers_and_body_when_verified_then_only_a_rejection_can_come_out(
    headers: dict[str, str], body: bytes
) -> None:
    verifier = WebhookVerifier([VECTOR_SECRET, NEW_SECRET], tolerance=TOLERANCE)
    try:
        verifier.verify(headers, body, now=VECTOR_TIMESTAMP)
    except WebhookRejected:
        pass


# Secrets


@pytest.mark.parametrize(
    "secret", ["whsec_", "whsec_abc", "whsec_not base64 at all!", "", "whsec_é", "whsec_" + "A" * 31]
)
def test_given_a_secret_that_is_not_one_when_configured_then_a_value_error_names_its_position_only(
    secret: str,
) -> None:
    expected = r"webhook secret #2 is not a whsec_ base64 secret of at least 24 bytes"
    with pytest.raises(ValueError, match=expected) as raised:
        WebhookVerifier([NEW_SECRET, secret], tolerance=TOLERANCE)

    assert not secret[6:] or secret[6:] not in str(raised.value)


def test_given_no_secret_when_configured_then_a_value_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        WebhookVerifier([], tolerance=TOLERANCE)


def test_given_any_rejection_when_its_message_is_read_then_it_never_quotes_a_secret_or_the_body() -> None:
    verifier = WebhookVerifier([NEW_SECRET], tolerance=TOLERANCE)
    body = b'{"secret-ish": "card-code-1234"}'
    messages = []
    for headers in (
        signed_headers(OTHER_SECRET, body),
        signed_headers(NEW_SECRET, body, timestamp=NOW - 3600),
        {"webhook-id": "x"},
    ):
        with pytest.raises(WebhookRejected) as raised:
            verifier.verify(headers, body, now=NOW)
        messages.append(str(raised.value))

    for message in messages:
        assert NEW_SECRET[6:] not in message and OTHER_SECRET[6:] not in message and "card-code" not in message


# Parsing signed events into the port's types


def verified(event_type: str, data: dict[str, Any]) -> Any:
    body = event_body(event_type, data)
    return verify_webhook([NEW_SECRET], signed_headers(NEW_SECRET, body), body, tolerance=TOLERANCE, now=NOW)


def test_given_a_signed_points_earned_event_when_verified_then_it_reads_as_points_earned() -> None:
    event = verified(
        "points.earned",
        {
            "user_id": "u1",
            "points": 500,
            "transaction_id": "tx_9",
            "balance": BalanceWire.of(BALANCE).model_dump(mode="json"),
        },
    )

    assert (event.id, event.type, event.occurred_at) == ("msg_1", "points.earned", WHEN)
    assert event.data == PointsEarned(user_id="u1", points=500, transaction_id="tx_9", balance=BALANCE)


@pytest.mark.parametrize(
    ("event_type", "status"),
    [("redemption.fulfilled", RedemptionStatus.FULFILLED), ("redemption.failed", RedemptionStatus.FAILED)],
)
def test_given_a_signed_settled_redemption_when_verified_then_it_reads_as_redemption_settled(
    event_type: str, status: RedemptionStatus
) -> None:
    event = verified(event_type, settled_data(a_redemption(status)))

    assert event.data == RedemptionSettled(redemption=a_redemption(status), balance=BALANCE)


def test_given_a_signed_catalog_change_when_verified_then_it_reads_as_catalog_item_changed() -> None:
    event = verified("catalog.item_changed", {"reward_id": "rw_1", "availability": "OUT_OF_STOCK"})

    assert event.data == CatalogItemChanged(reward_id="rw_1", availability=RewardAvailability.OUT_OF_STOCK)


def test_given_a_signed_event_of_an_unknown_type_when_verified_then_it_has_no_data() -> None:
    event = verified("loyalty.tier_changed", {"anything": [1, 2]})

    assert (event.type, event.data) == ("loyalty.tier_changed", None)


def test_given_a_gift_card_in_a_settled_event_when_verified_then_it_is_kept_but_never_printed() -> None:
    redemption = a_redemption(RedemptionStatus.FULFILLED)
    data = settled_data(redemption)
    data["redemption"]["gift_card"] = {"code": "CODE-SECRET", "pin": "9876", "claim_url": None, "expires_at": None}

    event = verified("redemption.fulfilled", data)

    assert event.data.redemption.gift_card == GiftCard(code="CODE-SECRET", pin="9876", claim_url=None, expires_at=None)
    assert "CODE-SECRET" not in repr(event)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not an event"),
        (b"[1, 2]", "not an event"),
        (b'{"type": "points.earned"}', "not an event"),
        (b'{"type": "points.earned", "timestamp": "yesterday", "data": {}}', "not an event"),
        (event_body("points.earned", {"user_id": "u1", "points": -5}), "not valid"),
        (event_body("catalog.item_changed", {"reward_id": "rw_1", "availability": "GONE"}), "not valid"),
        (event_body("redemption.fulfilled", settled_data(a_redemption(RedemptionStatus.FAILED))), "carries a FAILED"),
        (event_body("redemption.failed", settled_data(a_redemption(RedemptionStatus.PENDING))), "carries a PENDING"),
        (
            event_body("redemption.failed", settled_data(a_redemption(RedemptionStatus.FAILED, user_id="u2"))),
            "another user",
        ),
        (b"[" * 5000 + b"]" * 5000, "not an event"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_given_a_signed_body_that_is_not_an_event_when_verified_then_invalid_webhook_event(
    body: bytes, reason: str
) -> None:
    with pytest.raises(InvalidWebhookEvent, match=reason):
        verify_webhook([NEW_SECRET], signed_headers(NEW_SECRET, body), body, tolerance=TOLERANCE, now=NOW)


def test_given_an_unsigned_body_that_is_not_an_event_when_verified_then_the_signature_is_what_fails() -> None:
    body = b"not json"

    with pytest.raises(WebhookRejected) as raised:
        verify_webhook([NEW_SECRET], signed_headers(OTHER_SECRET, body), body, tolerance=TOLERANCE, now=NOW)

    assert not isinstance(raised.value, InvalidWebhookEvent)
