"""POST /webhooks/tremendous and /webhooks/tango over real HTTP: staleness, key rotation, 401 versus 400.

Each seller's fake (tests/fake_tremendous.py, tests/fake_tango.py) holds an order the gateway left PENDING
and has since completed; a delivery that is processed makes the gateway look that order up at the fake and
settle the redemption. A refused one leaves both untouched: no lookup reached the fake, still PENDING.
The reconciler is put to sleep, so only a webhook can settle.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

from giftgraph.settings import Settings
from providers.composite import order_reference
from providers.tango import SIGNATURE_HEADER as TANGO_SIGNATURE_HEADER
from providers.tango import sign as tango_sign
from resolvers.ids import encode_global_id
from resolvers.redeem import provider_idempotency_key
from tests import fake_tango
from tests.fake_tremendous import FakeTremendous, FakeTremendousState, running_fake_tremendous
from tests.support import LiveServer, gql, live_server, make_settings, operation

REDEEM = operation("Redeem")
REDEMPTION = operation("Redemption")
STALE = timedelta(hours=2)  # past both sellers' accepted age (Tremendous 1 h, Tango 15 min), by far


class Seller(Protocol):
    """What a test needs to know of one seller: its fake, its settings and how it signs and words a delivery."""

    name: str
    keys: tuple[str, str]  # (new, old): a rotation replaces the old with the new

    def running_fake(self) -> AbstractContextManager[Any]: ...
    def settings(self, data_dir: Path, fake: Any, **overrides: Any) -> Settings: ...
    def make_pending(self, fake: Any) -> None: ...
    def complete(self, fake: Any, reference: str) -> str: ...
    def delivery(self, about: str, occurred: datetime) -> bytes: ...
    def signed(self, key: str, body: bytes) -> dict[str, str]: ...
    def lookups(self, fake: Any) -> int: ...


@dataclass(frozen=True)
class Tremendous:
    name: str = "tremendous"
    reward: str = "AMZN-US"
    face_value: str = "25"
    keys: tuple[str, str] = ("tremendous-webhook-key-new", "tremendous-webhook-key-old")

    def running_fake(self) -> AbstractContextManager[FakeTremendous]:
        # Not about rate limits: the fake's 10/s window would turn this test's bursts into 429s.
        return running_fake_tremendous(FakeTremendousState(rate_limit_per_second=1000))

    def settings(self, data_dir: Path, fake: FakeTremendous, **overrides: Any) -> Settings:
        return make_settings(
            data_dir,
            provider="tremendous",
            tremendous_base_url=fake.url,
            tremendous_api_key=fake.api_key,
            tremendous_rate_limit_per_second=0,
            **COMMON,
            **overrides,
        )

    def make_pending(self, fake: FakeTremendous) -> None:
        fake.state.async_orders = True

    def complete(self, fake: FakeTremendous, reference: str) -> str:
        """The order placed under `reference` delivered at the fake; what a delivery about it names (a reward id)."""
        fake.state.complete_pending()
        (order,) = [o for o in fake.state.orders.values() if o.get("external_id") == reference]
        return order["rewards"][0]["id"]

    def delivery(self, about: str, occurred: datetime) -> bytes:
        return json.dumps(
            {
                "event": "REWARDS.DELIVERY.SUCCEEDED",
                "uuid": str(uuid.uuid4()),
                "created_utc": occurred.isoformat(),
                "payload": {"resource": {"id": about, "type": "rewards"}, "meta": {}},
            }
        ).encode()

    def signed(self, key: str, body: bytes) -> dict[str, str]:
        return {"Tremendous-Webhook-Signature": "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()}

    def lookups(self, fake: FakeTremendous) -> int:
        """GETs of orders and rewards: how the gateway reads the order a delivery is about."""
        return sum(1 for method, path in fake.state.requests if method == "GET" and "/products" not in path)


@dataclass(frozen=True)
class Tango:
    name: str = "tango"
    reward: str = "U000001"
    face_value: str = "10"
    keys: tuple[str, str] = (
        base64.b64encode(b"tango-webhook-secret-new-32-byte").decode(),
        base64.b64encode(b"tango-webhook-secret-old-32-byte").decode(),
    )

    def running_fake(self) -> AbstractContextManager[fake_tango.RunningFakeTango]:
        return fake_tango.running_fake_tango(rate_limit=None)

    def settings(self, data_dir: Path, fake: fake_tango.RunningFakeTango, **overrides: Any) -> Settings:
        return make_settings(
            data_dir,
            provider="tango",
            tango_base_url=fake.url,
            tango_platform_name=fake_tango.PLATFORM_NAME,
            tango_platform_key=fake_tango.PLATFORM_KEY,
            tango_account_identifier=fake_tango.ACCOUNT,
            tango_customer_identifier=fake_tango.CUSTOMER,
            tango_rate_limit_per_second=0,
            **COMMON,
            **overrides,
        )

    def make_pending(self, fake: fake_tango.RunningFakeTango) -> None:
        fake.state.pending_utids.add(self.reward)

    def complete(self, fake: fake_tango.RunningFakeTango, reference: str) -> str:
        """The order placed under `reference` completed at the fake; what a delivery about it names (the reference)."""
        order = fake.state.orders[fake.state.by_ref[reference]]
        order["status"] = "COMPLETE"
        order["reward"]["credentialList"] = [
            {"label": "Card Number", "value": fake_tango.CARD_CODE, "type": "text", "credentialType": "cardNumber"}
        ]
        return reference

    def delivery(self, about: str, occurred: datetime) -> bytes:
        return json.dumps(
            {
                "eventId": str(uuid.uuid4()),
                "revision": 2,
                "category": "ORDER",
                "eventType": "LineItemDeliveryStatus",
                "eventOccurredAt": occurred.isoformat(),
                "eventData": {"externalRefID": about, "status": "COMPLETED"},
            }
        ).encode()

    def signed(self, key: str, body: bytes) -> dict[str, str]:
        return {TANGO_SIGNATURE_HEADER: tango_sign(key, body)}

    def lookups(self, fake: fake_tango.RunningFakeTango) -> int:
        return sum(1 for method, path in fake.state.api_requests if method == "GET" and path.startswith("/orders"))


COMMON: dict[str, Any] = {
    "ledger_starting_balance": 10_000,
    "provider_retry_base_delay": 0.01,
    "provider_retry_max_delay": 0.05,
    "provider_breaker_failure_threshold": 1000,
    # A reconciler that does not look during the test: only a webhook can settle a PENDING redemption.
    "reconcile_interval_seconds": 3600,
    "provider_call_budget_seconds": 3600,
}
SELLERS = [Tremendous(), Tango()]


@pytest.fixture(params=SELLERS, ids=lambda seller: seller.name)
def seller(request: pytest.FixtureRequest) -> Seller:
    return request.param


@pytest.fixture
def fake(seller: Seller) -> Iterator[Any]:
    with seller.running_fake() as running:
        yield running


def secrets_setting(seller: Seller, *keys: str) -> dict[str, Any]:
    return {f"{seller.name}_webhook_secrets": list(keys)}


@dataclass
class Pending:
    """A redemption left PENDING by the seller, whose order the fake has since completed."""

    id: str
    user_id: str
    about: str  # what a delivery about its order names


def pending_redemption(gateway: LiveServer, seller: Seller, fake: Any) -> Pending:
    user_id, cmid = f"hook-{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    seller.make_pending(fake)
    variables = {
        "input": {
            "clientMutationId": cmid,
            "rewardId": encode_global_id("Reward", seller.reward),
            "faceValue": seller.face_value,
        }
    }
    body = gql(gateway, REDEEM, variables, token=gateway.token(user_id))
    assert "errors" not in body, body
    redemption = body["data"]["redeem"]["redemption"]
    assert redemption["status"] == "PENDING"
    about = seller.complete(fake, order_reference(provider_idempotency_key(user_id, cmid)))
    return Pending(id=redemption["id"], user_id=user_id, about=about)


def status(gateway: LiveServer, pending: Pending) -> str:
    body = gql(gateway, REDEMPTION, {"id": pending.id}, token=gateway.token(pending.user_id))
    return body["data"]["node"]["status"]


def deliver(gateway: LiveServer, seller: Seller, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{gateway.base_url}/webhooks/{seller.name}", content=body, headers=headers, timeout=30)


def test_given_a_stale_but_well_signed_delivery_then_401_and_nothing_processed(
    tmp_path: Path, seller: Seller, fake: Any
) -> None:
    key, _ = seller.keys
    with live_server(seller.settings(tmp_path, fake, **secrets_setting(seller, key))) as gateway:
        pending = pending_redemption(gateway, seller, fake)
        stale = seller.delivery(pending.about, datetime.now(UTC) - STALE)
        lookups = seller.lookups(fake)

        refused = deliver(gateway, seller, stale, seller.signed(key, stale))

        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "invalid_signature"
        assert seller.lookups(fake) == lookups  # the order was never read
        assert status(gateway, pending) == "PENDING"
        # The same delivery dated now is processed: the age alone made the difference.
        fresh = seller.delivery(pending.about, datetime.now(UTC))
        assert deliver(gateway, seller, fresh, seller.signed(key, fresh)).json() == {"status": "processed"}
        assert status(gateway, pending) == "FULFILLED"


@pytest.mark.parametrize("spelling", ["list", "list-and-older-singular"])
def test_given_a_key_rotation_then_both_keys_are_accepted_and_a_removed_key_is_refused(
    tmp_path: Path, seller: Seller, fake: Any, spelling: str
) -> None:
    new, old = seller.keys
    if spelling == "list":
        both = secrets_setting(seller, new, old)
    else:  # the older singular setting adds one key to the list
        both = {**secrets_setting(seller, new), f"{seller.name}_webhook_secret": old}

    # During the rotation: the seller signs with the old key, then with the new one.
    with live_server(seller.settings(tmp_path, fake, **both)) as gateway:
        by_old, by_new, later = (pending_redemption(gateway, seller, fake) for _ in range(3))
        for pending, key in ((by_old, old), (by_new, new)):
            body = seller.delivery(pending.about, datetime.now(UTC))
            answer = deliver(gateway, seller, body, seller.signed(key, body))
            assert answer.status_code == 200, answer.text
            assert status(gateway, pending) == "FULFILLED"

    # After it: the old key is removed, and a delivery signed with it is refused.
    with live_server(seller.settings(tmp_path, fake, **secrets_setting(seller, new))) as gateway:
        body = seller.delivery(later.about, datetime.now(UTC))
        lookups = seller.lookups(fake)

        refused = deliver(gateway, seller, body, seller.signed(old, body))

        assert refused.status_code == 401, refused.text
        assert seller.lookups(fake) == lookups
        assert status(gateway, later) == "PENDING"
        assert deliver(gateway, seller, body, seller.signed(new, body)).status_code == 200
        assert status(gateway, later) == "FULFILLED"


NOT_EVENTS = {
    "not-json": lambda about: b"{not json",
    "a-list": lambda about: b"[]",
    "no-date": lambda about: json.dumps(
        {"event": "REWARDS.DELIVERY.SUCCEEDED", "eventId": "e", "about": about}
    ).encode(),
}


@pytest.mark.parametrize("make_body", NOT_EVENTS.values(), ids=NOT_EVENTS.keys())
def test_given_a_well_signed_body_that_is_not_an_event_then_400_and_a_forged_one_401(
    tmp_path: Path, seller: Seller, fake: Any, make_body: Any
) -> None:
    key, _ = seller.keys
    with live_server(seller.settings(tmp_path, fake, **secrets_setting(seller, key))) as gateway:
        pending = pending_redemption(gateway, seller, fake)
        body = make_body(pending.about)
        lookups = seller.lookups(fake)

        malformed = deliver(gateway, seller, body, seller.signed(key, body))
        forged = deliver(gateway, seller, body, seller.signed(seller.keys[1], body))

        assert malformed.status_code == 400, malformed.text
        assert malformed.json()["error"]["code"] == "invalid_event"
        assert forged.status_code == 401, forged.text
        assert forged.json()["error"]["code"] == "invalid_signature"
        assert seller.lookups(fake) == lookups
        assert status(gateway, pending) == "PENDING"
