"""GIFTGRAPH_PROVIDER=tremendous through the GraphQL API: giftgraph's points ledger and the fake Tremendous.

The gateway is a real server on loopback; the fake Tremendous (tests/fake_tremendous.py) is another,
reproducing the documented API. Each test reads the provider-side effects from the fake's own state:
one order per clientMutationId, whatever happens, and the points never lost.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from providers import RedeemRequest, RedemptionStatus
from providers.composite import order_reference
from providers.rules import fingerprint
from resolvers.ids import encode_global_id
from resolvers.redeem import provider_idempotency_key
from tests.fake_tremendous import FakeTremendous, running_fake_tremendous
from tests.support import (
    LiveServer,
    eventually,
    gql,
    live_server,
    make_settings,
    operation,
    run_on_server_loop,
)

REDEEM = operation("Redeem")
REDEMPTION = operation("Redemption")
VIEWER_BALANCE = operation("ViewerBalance")
HISTORY = operation("History")
START = 5_000  # points every new user starts with here (25 USD = 2,500 points)
AMAZON = "AMZN-US"


@pytest.fixture
def fake() -> Iterator[FakeTremendous]:
    with running_fake_tremendous() as running:
        yield running


# A seller-backed gateway that settles quickly: short retries and budget, a busy reconciler, no breaker trips.
FAST_SAGA: dict[str, Any] = {
    "ledger_starting_balance": START,
    "provider_retry_base_delay": 0.01,
    "provider_retry_max_delay": 0.05,
    "provider_call_budget_seconds": 2.0,  # the reconciler may look at a PENDING one after twice this
    "provider_breaker_failure_threshold": 1000,
    "reconcile_interval_seconds": 0.1,
    "reconcile_max_backoff_seconds": 0.5,
}


def gateway_settings(data_dir: Path, fake: FakeTremendous, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "provider": "tremendous",
        "tremendous_base_url": fake.url,
        "tremendous_api_key": fake.api_key,
        "tremendous_webhook_secret": "tremendous-webhook-key-for-tests",
        "tremendous_rate_limit_per_second": 0,
        **FAST_SAGA,
        "provider_read_timeout": 2.0,
        "funding_balance_ttl_seconds": 60,
    }
    values.update(overrides)
    return make_settings(data_dir, **values)


@pytest.fixture
def gateway(tmp_path: Path, fake: FakeTremendous) -> Iterator[LiveServer]:
    with live_server(gateway_settings(tmp_path, fake)) as running:
        yield running


def user() -> str:
    return f"trem-{uuid.uuid4().hex[:10]}"


def warm_catalog(gateway: LiveServer) -> None:
    """Read the catalog and the funding balance once (both cached), so errors injected next reach the order."""
    import httpx

    assert gql(gateway, "{ catalog(first: 1) { totalCount } }")["data"]["catalog"]["totalCount"] > 0
    assert httpx.get(f"{gateway.base_url}/readyz", timeout=10).status_code == 200


def redeem(
    gateway: LiveServer, user_id: str, cmid: str, face_value: str = "25", reward: str = AMAZON
) -> dict[str, Any]:
    variables = {
        "input": {"clientMutationId": cmid, "rewardId": encode_global_id("Reward", reward), "faceValue": face_value}
    }
    body = gql(gateway, REDEEM, variables, token=gateway.token(user_id))
    assert "errors" not in body, body
    return body["data"]["redeem"]


def balance(gateway: LiveServer, user_id: str) -> int:
    return gql(gateway, VIEWER_BALANCE, token=gateway.token(user_id))["data"]["viewer"]["balance"]["available"]


def redemption(gateway: LiveServer, user_id: str, redemption_id: str) -> dict[str, Any]:
    return gql(gateway, REDEMPTION, {"id": redemption_id}, token=gateway.token(user_id))["data"]["node"]


def orders_for(fake: FakeTremendous, user_id: str, cmid: str) -> int:
    reference = order_reference(provider_idempotency_key(user_id, cmid))
    return sum(1 for order in fake.state.orders.values() if order.get("external_id") == reference)


def test_given_tremendous_then_the_catalog_is_its_products_with_fixed_and_variable_values(gateway: LiveServer) -> None:
    query = "{ catalog(first: 10) { edges { node { id name denomination { kind faceValues { amount } } } } } }"
    nodes = {edge["node"]["name"]: edge["node"] for edge in gql(gateway, query)["data"]["catalog"]["edges"]}

    assert nodes["Amazon.com"]["denomination"]["kind"] == "FIXED"
    amounts = [Decimal(v["amount"]) for v in nodes["Amazon.com"]["denomination"]["faceValues"]]
    assert amounts == [Decimal("10"), Decimal("25"), Decimal("50")]
    assert nodes["Virtual Visa"]["denomination"]["kind"] == "VARIABLE"


def test_given_points_when_redeemed_then_one_order_the_card_to_its_owner_and_a_retry_replays(
    gateway: LiveServer, fake: FakeTremendous
) -> None:
    user_id = user()

    first = redeem(gateway, user_id, "r-1")
    again = redeem(gateway, user_id, "r-1")

    assert first["userErrors"] == [] and again == first
    assert first["redemption"]["status"] == "FULFILLED"
    assert first["redemption"]["giftCard"]["claimUrl"].startswith("https://")
    assert first["balance"]["available"] == START - 2_500
    assert orders_for(fake, user_id, "r-1") == 1
    kinds = [
        e["node"]["kind"]
        for e in gql(gateway, HISTORY, {"first": 5}, token=gateway.token(user_id))["data"]["viewer"]["history"]["edges"]
    ]
    assert kinds == ["REDEEM", "EARN"]
    # Shown to its owner only: another user gets no card (not even the node).
    other = gql(gateway, REDEMPTION, {"id": first["redemption"]["id"]}, token=gateway.token(user()))
    assert other["data"]["node"] is None


def test_given_too_few_points_then_insufficient_points_and_nothing_is_ordered(
    gateway: LiveServer, fake: FakeTremendous
) -> None:
    user_id = user()

    payload = redeem(gateway, user_id, "dear", face_value="50", reward=AMAZON)  # 5,000 points: all of them
    second = redeem(gateway, user_id, "dear-2", face_value="10")

    assert payload["userErrors"] == []
    assert [e["code"] for e in second["userErrors"]] == ["INSUFFICIENT_POINTS"]
    assert orders_for(fake, user_id, "dear-2") == 0
    assert balance(gateway, user_id) == 0


def test_given_the_company_account_short_then_provider_unavailable_before_ordering_and_no_points_lost(
    gateway: LiveServer, fake: FakeTremendous
) -> None:
    user_id = user()
    fake.state.balance_cents = 1_000  # 10 USD: less than the 25 USD card (the gateway trusts it for 60 s)

    refused = redeem(gateway, user_id, "short")

    assert [e["code"] for e in refused["userErrors"]] == ["PROVIDER_UNAVAILABLE"]
    assert (balance(gateway, user_id), orders_for(fake, user_id, "short")) == (START, 0)
    fake.state.balance_cents = 100_000
    # No wait for the cached balance to expire: a refusal asks afresh once a second, so the top-up is seen.
    time.sleep(1.2)
    retried = redeem(gateway, user_id, "short")
    assert retried["userErrors"] == [] and orders_for(fake, user_id, "short") == 1


def test_given_an_asynchronous_order_then_pending_until_the_reconciler_sees_it_delivered(
    gateway: LiveServer, fake: FakeTremendous
) -> None:
    user_id = user()
    fake.state.async_orders = True

    first = redeem(gateway, user_id, "async")

    assert first["userErrors"] == [] and first["redemption"]["status"] == "PENDING"
    fake.state.complete_pending()
    eventually(
        timeout=30, check=lambda: redemption(gateway, user_id, first["redemption"]["id"])["status"] == "FULFILLED"
    )
    assert orders_for(fake, user_id, "async") == 1
    assert balance(gateway, user_id) == START - 2_500


def test_given_a_refused_order_then_failed_and_the_points_refunded(gateway: LiveServer, fake: FakeTremendous) -> None:
    user_id = user()
    warm_catalog(gateway)
    fake.state.inject(422, {"errors": {"message": "Denomination not available", "payload": {}}})

    payload = redeem(gateway, user_id, "refused")

    assert payload["userErrors"] == []
    assert payload["redemption"]["status"] == "FAILED"
    assert balance(gateway, user_id) == START
    kinds = [
        e["node"]["kind"]
        for e in gql(gateway, HISTORY, {"first": 5}, token=gateway.token(user_id))["data"]["viewer"]["history"]["edges"]
    ]
    assert kinds == ["REFUND", "REDEEM", "EARN"]


def test_given_the_order_answer_lost_then_pending_and_the_reconciler_finds_it_without_ordering_twice(
    gateway: LiveServer, fake: FakeTremendous
) -> None:
    user_id = user()
    warm_catalog(gateway)
    fake.state.inject(502, "<html>Bad Gateway</html>", times=4)  # every attempt of the saga's order call

    first = redeem(gateway, user_id, "lost")

    assert first["userErrors"] == [] and first["redemption"]["status"] == "PENDING"
    eventually(
        timeout=30, check=lambda: redemption(gateway, user_id, first["redemption"]["id"])["status"] == "FULFILLED"
    )
    assert orders_for(fake, user_id, "lost") == 1
    assert balance(gateway, user_id) == START - 2_500


def test_given_a_crash_between_reserving_and_ordering_then_the_reconciler_orders_exactly_once(
    tmp_path: Path, fake: FakeTremendous
) -> None:
    user_id, cmid = user(), "crash"
    key = provider_idempotency_key(user_id, cmid)
    request = RedeemRequest(
        user_id=user_id, reward_id=AMAZON, face_value=Decimal("25"), points=2_500, idempotency_key=key
    )
    # The first process: the saga's first step committed, then the process died before ordering.
    with live_server(gateway_settings(tmp_path, fake, reconcile_interval_seconds=3600)) as first:
        ledger = first.provider.ledger

        async def reserve_only() -> None:
            (reward,) = await first.provider.get_rewards([AMAZON])
            await ledger.reserve(
                request, fingerprint=fingerprint(request), reference=order_reference(key), reward=reward
            )

        run_on_server_loop(first, reserve_only())
    assert orders_for(fake, user_id, cmid) == 0

    # The next process: its reconciler finds the PENDING redemption and orders it, once.
    with live_server(gateway_settings(tmp_path, fake)) as second:
        eventually(timeout=30, check=lambda: orders_for(fake, user_id, cmid) == 1)
        found = run_on_server_loop(second, second.provider.ledger.redemption_by_reference(order_reference(key)))
        eventually(
            lambda: (
                run_on_server_loop(second, second.provider.ledger.redemptions_by_id([found.id]))[0].status
                is RedemptionStatus.FULFILLED
            )
        )
        time.sleep(0.5)  # a few more reconciler passes: still one order
        assert orders_for(fake, user_id, cmid) == 1
        assert balance(second, user_id) == START - 2_500


def test_given_a_signed_loyalty_webhook_then_the_points_are_credited_once(tmp_path: Path, fake: FakeTremendous) -> None:
    import base64
    import json
    import os
    from datetime import UTC, datetime

    from standardwebhooks.webhooks import Webhook

    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    with live_server(gateway_settings(tmp_path, fake, loyalty_webhook_secrets=[secret])) as gateway:
        user_id = user()
        body = json.dumps(
            {
                "type": "points.earned",
                "timestamp": datetime.now(UTC).isoformat(),
                "data": {"user_id": user_id, "points": 700, "reason": "Order #1"},
            }
        )
        now = datetime.now(UTC)
        headers = {
            "webhook-id": "msg_loyalty_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(secret).sign("msg_loyalty_1", now, body),
            "content-type": "application/json",
        }
        import httpx

        answers = [
            httpx.post(f"{gateway.base_url}/webhooks/loyalty", content=body, headers=headers, timeout=10)
            for _ in range(2)
        ]
        forged = httpx.post(
            f"{gateway.base_url}/webhooks/loyalty",
            content=body,
            headers={**headers, "webhook-id": "msg_loyalty_2"},
            timeout=10,
        )

        assert [a.json()["status"] for a in answers] == ["processed", "duplicate"]
        assert forged.status_code == 401
        assert balance(gateway, user_id) == START + 700


def test_given_tremendous_then_readyz_and_metrics_show_the_funding_balance(
    gateway: LiveServer, fake: FakeTremendous
) -> None:
    import httpx

    ready = httpx.get(f"{gateway.base_url}/readyz", timeout=10).json()
    metrics = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text

    assert Decimal(ready["checks"]["funding"]["available"]) == Decimal("1000")
    assert ready["checks"]["funding"]["currency"] == "USD"
    assert 'giftgraph_provider_funding_balance{provider="tremendous",currency="USD"} 1000' in metrics


def test_given_an_asynchronous_order_when_tremendous_signs_its_delivery_then_the_webhook_settles_it(
    tmp_path: Path, fake: FakeTremendous
) -> None:
    import hashlib
    import hmac
    import json
    from datetime import UTC, datetime

    import httpx

    # A reconciler that does not wake up during the test: only the webhook can settle.
    settings = gateway_settings(tmp_path, fake, reconcile_interval_seconds=3600, provider_call_budget_seconds=3600)
    key = "tremendous-webhook-key-for-tests"
    with live_server(settings) as gateway:
        user_id = user()
        fake.state.async_orders = True
        first = redeem(gateway, user_id, "hooked")
        assert first["redemption"]["status"] == "PENDING"
        fake.state.complete_pending()
        (order,) = [
            o
            for o in fake.state.orders.values()
            if o.get("external_id") == order_reference(provider_idempotency_key(user_id, "hooked"))
        ]
        raw = json.dumps(
            {
                "event": "REWARDS.DELIVERY.SUCCEEDED",
                "uuid": str(uuid.uuid4()),
                "created_utc": datetime.now(UTC).isoformat(),
                "payload": {"resource": {"id": order["rewards"][0]["id"], "type": "rewards"}, "meta": {}},
            }
        ).encode()
        signature = "sha256=" + hmac.new(key.encode(), raw, hashlib.sha256).hexdigest()
        url = f"{gateway.base_url}/webhooks/tremendous"

        forged = httpx.post(
            url, content=raw, headers={"Tremendous-Webhook-Signature": "sha256=" + "0" * 64}, timeout=10
        )
        answered = httpx.post(url, content=raw, headers={"Tremendous-Webhook-Signature": signature}, timeout=10)

        assert forged.status_code == 401
        assert answered.status_code == 200, answered.text
        settled = redemption(gateway, user_id, first["redemption"]["id"])
        assert settled["status"] == "FULFILLED" and settled["giftCard"]["claimUrl"]
        assert orders_for(fake, user_id, "hooked") == 1


def test_given_tremendous_answers_409_for_the_reference_then_idempotency_key_reused_and_the_points_back(
    gateway: LiveServer, fake: FakeTremendous
) -> None:
    user_id = user()
    warm_catalog(gateway)
    # Tremendous already holds an order under this external_id with other parameters.
    fake.state.inject(409, {"errors": {"message": "external_id already used", "payload": {}}})

    payload = redeem(gateway, user_id, "taken")

    assert [e["code"] for e in payload["userErrors"]] == ["IDEMPOTENCY_KEY_REUSED"]
    assert balance(gateway, user_id) == START
    assert orders_for(fake, user_id, "taken") == 0


@pytest.mark.parametrize(
    ("provider", "missing"),
    [("tremendous", "GIFTGRAPH_TREMENDOUS_API_KEY"), ("tango", "GIFTGRAPH_TANGO_PLATFORM_NAME")],
)
def test_given_a_seller_without_its_credentials_then_the_app_refuses_to_start_naming_the_setting(
    tmp_path: Path, provider: str, missing: str
) -> None:
    from giftgraph.app import create_app
    from giftgraph.settings import ConfigurationError

    with pytest.raises(ConfigurationError, match=missing):
        create_app(make_settings(tmp_path, provider=provider))
    assert not (tmp_path / "card-keys.json").exists()  # nothing written before the refusal


def test_given_tremendous_drops_a_redeemed_product_then_the_redemption_still_shows_it_and_it_cannot_be_redeemed(
    gateway: LiveServer, fake: FakeTremendous
) -> None:
    user_id = user()
    first = redeem(gateway, user_id, "kept")
    fake.state.products = [product for product in fake.state.products if product["id"] != AMAZON]
    gateway.provider.invalidate_catalog()

    shown = redemption(gateway, user_id, first["redemption"]["id"])
    again = redeem(gateway, user_id, "after-drop")

    assert shown["reward"]["name"] == "Amazon.com"
    assert [e["code"] for e in again["userErrors"]] == ["REWARD_UNAVAILABLE"]
    assert balance(gateway, user_id) == START - 2_500
