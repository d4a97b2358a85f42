"""GIFTGRAPH_PROVIDER=tango through the GraphQL API: giftgraph's points ledger and the fake Tango Card.

The fake (tests/fake_tango.py) replays an existing externalRefID with the original order even for
another item, so a clientMutationId reused for another reward must be caught before any call.
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
from tests.fake_tango import (
    ACCOUNT,
    CUSTOMER,
    PLATFORM_KEY,
    PLATFORM_NAME,
    RunningFakeTango,
    delivery_event,
    running_fake_tango,
)
from tests.support import (
    LiveServer,
    eventually,
    gql,
    live_server,
    make_settings,
    operation,
    run_on_server_loop,
)
from tests.test_ledger_provider_api import FAST_SAGA, START

REDEEM = operation("Redeem")
VIEWER_BALANCE = operation("ViewerBalance")
COFFEE = "U000001"  # Coffee Co $10, fixed value: 1,000 points


@pytest.fixture
def fake() -> Iterator[RunningFakeTango]:
    with running_fake_tango(rate_limit=None) as running:
        yield running


def gateway_settings(data_dir: Path, fake: RunningFakeTango, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "provider": "tango",
        "tango_base_url": fake.url,
        "tango_platform_name": PLATFORM_NAME,
        "tango_platform_key": PLATFORM_KEY,
        "tango_account_identifier": ACCOUNT,
        "tango_customer_identifier": CUSTOMER,
        "tango_rate_limit_per_second": 0,
        **FAST_SAGA,
    }
    values.update(overrides)
    return make_settings(data_dir, **values)


@pytest.fixture
def gateway(tmp_path: Path, fake: RunningFakeTango) -> Iterator[LiveServer]:
    with live_server(gateway_settings(tmp_path, fake)) as running:
        yield running


def user() -> str:
    return f"tango-{uuid.uuid4().hex[:10]}"


def redeem(
    gateway: LiveServer, user_id: str, cmid: str, reward: str = COFFEE, face_value: str = "10"
) -> dict[str, Any]:
    variables = {
        "input": {"clientMutationId": cmid, "rewardId": encode_global_id("Reward", reward), "faceValue": face_value}
    }
    body = gql(gateway, REDEEM, variables, token=gateway.token(user_id))
    assert "errors" not in body, body
    return body["data"]["redeem"]


def orders_for(fake: RunningFakeTango, user_id: str, cmid: str) -> int:
    reference = order_reference(provider_idempotency_key(user_id, cmid))
    return sum(1 for order in fake.state.orders.values() if order.get("externalRefID") == reference)


def balance(gateway: LiveServer, user_id: str) -> int:
    return gql(gateway, VIEWER_BALANCE, token=gateway.token(user_id))["data"]["viewer"]["balance"]["available"]


def test_given_tango_when_redeemed_then_one_order_with_the_card_and_a_retry_replays(
    gateway: LiveServer, fake: RunningFakeTango
) -> None:
    user_id = user()

    first = redeem(gateway, user_id, "t-1")
    again = redeem(gateway, user_id, "t-1")

    assert first["userErrors"] == [] and again == first
    assert first["redemption"]["status"] == "FULFILLED"
    assert first["redemption"]["giftCard"]["code"]
    assert first["balance"]["available"] == START - 1_000
    assert orders_for(fake, user_id, "t-1") == 1


def test_given_a_client_mutation_id_reused_for_another_reward_then_refused_before_tango_replays_the_first(
    gateway: LiveServer, fake: RunningFakeTango
) -> None:
    user_id = user()
    first = redeem(gateway, user_id, "same")
    placed = len(fake.state.orders)

    other = redeem(gateway, user_id, "same", reward="U000002", face_value="20")

    assert first["userErrors"] == []
    assert [e["code"] for e in other["userErrors"]] == ["IDEMPOTENCY_KEY_REUSED"]
    assert len(fake.state.orders) == placed
    assert balance(gateway, user_id) == START - 1_000


def test_given_a_crash_between_reserving_and_ordering_then_the_reconciler_orders_exactly_once(
    tmp_path: Path, fake: RunningFakeTango
) -> None:
    user_id, cmid = user(), "crash"
    key = provider_idempotency_key(user_id, cmid)
    request = RedeemRequest(
        user_id=user_id, reward_id=COFFEE, face_value=Decimal("10"), points=1_000, idempotency_key=key
    )
    with live_server(gateway_settings(tmp_path, fake, reconcile_interval_seconds=3600)) as first:

        async def reserve_only() -> None:
            (reward,) = await first.provider.get_rewards([COFFEE])
            await first.provider.ledger.reserve(
                request, fingerprint=fingerprint(request), reference=order_reference(key), reward=reward
            )

        run_on_server_loop(first, reserve_only())
    assert orders_for(fake, user_id, cmid) == 0

    with live_server(gateway_settings(tmp_path, fake)) as second:
        eventually(timeout=30, check=lambda: orders_for(fake, user_id, cmid) == 1)
        ledger = second.provider.ledger
        found = run_on_server_loop(second, ledger.redemption_by_reference(order_reference(key)))
        eventually(
            lambda: (
                run_on_server_loop(second, ledger.redemptions_by_id([found.id]))[0].status is RedemptionStatus.FULFILLED
            )
        )
        time.sleep(0.5)
        assert orders_for(fake, user_id, cmid) == 1
        assert balance(second, user_id) == START - 1_000


def test_given_the_order_answer_lost_then_the_retry_with_the_same_reference_orders_once(
    gateway: LiveServer, fake: RunningFakeTango
) -> None:
    user_id = user()
    fake.state.lose_order_answers = 1  # the order is committed, then a 500 answers

    payload = redeem(gateway, user_id, "lost")

    assert payload["userErrors"] == []
    eventually(timeout=30, check=lambda: orders_for(fake, user_id, "lost") == 1)
    assert balance(gateway, user_id) == START - 1_000


def test_given_a_pending_order_when_tango_signs_its_delivery_then_the_webhook_settles_it(
    tmp_path: Path, fake: RunningFakeTango
) -> None:
    import httpx

    from providers.tango import SIGNATURE_HEADER, sign
    from tests.fake_tango import CARD_CODE, WEBHOOK_SECRET

    settings = gateway_settings(
        tmp_path,
        fake,
        tango_webhook_secret=WEBHOOK_SECRET,
        reconcile_interval_seconds=3600,
        provider_call_budget_seconds=3600,
    )
    with live_server(settings) as gateway:
        user_id = user()
        fake.state.pending_utids.add(COFFEE)
        first = redeem(gateway, user_id, "hooked")
        assert first["redemption"]["status"] == "PENDING"
        reference = order_reference(provider_idempotency_key(user_id, "hooked"))
        order = fake.state.orders[fake.state.by_ref[reference]]
        fake.state.pending_utids.clear()
        order["status"] = "COMPLETE"
        order["reward"]["credentialList"] = [
            {"label": "Card Number", "value": CARD_CODE, "type": "text", "credentialType": "cardNumber"}
        ]
        raw = delivery_event(reference, order["referenceOrderID"])
        url = f"{gateway.base_url}/webhooks/tango"

        forged = httpx.post(url, content=raw, headers={SIGNATURE_HEADER: sign(WEBHOOK_SECRET, raw + b" ")}, timeout=10)
        answered = httpx.post(url, content=raw, headers={SIGNATURE_HEADER: sign(WEBHOOK_SECRET, raw)}, timeout=10)

        assert forged.status_code == 401
        assert answered.status_code == 200, answered.text
        body = gql(gateway, operation("Redemption"), {"id": first["redemption"]["id"]}, token=gateway.token(user_id))
        assert body["data"]["node"]["status"] == "FULFILLED"
        assert body["data"]["node"]["giftCard"]["code"] == CARD_CODE


def test_given_an_item_taking_whole_amounts_when_redeemed_with_cents_then_refused_before_any_points_move(
    gateway: LiveServer, fake: RunningFakeTango
) -> None:
    user_id = user()
    whole_only = "U000002"  # Coffee Co EUR, 5-100, isWholeAmountValueRequired: Tango would answer 422.026

    refused = redeem(gateway, user_id, "cents", reward=whole_only, face_value="7.50")
    after_refusal = gql(gateway, VIEWER_BALANCE, token=gateway.token(user_id))["data"]["viewer"]["balance"]
    posted = fake.state.api_requests.count(("POST", "/orders"))
    whole = redeem(gateway, user_id, "whole", reward=whole_only, face_value="7")

    assert [(e["code"], e["field"]) for e in refused["userErrors"]] == [("INVALID_FACE_VALUE", ["input", "faceValue"])]
    assert refused["redemption"] is None
    assert (after_refusal["available"], after_refusal["pending"]) == (START, 0)
    assert posted == 0  # nothing was ordered, so nothing had to be refunded
    assert whole["userErrors"] == [] and whole["redemption"]["status"] == "FULFILLED"  # whole amounts still pass


def test_given_an_item_taking_whole_amounts_then_point_cost_for_prices_only_what_redeem_accepts(
    gateway: LiveServer,
) -> None:
    query = """query Cost($id: ID!, $cents: Decimal!, $whole: Decimal!) {
      node(id: $id) { ... on Reward { cents: pointCostFor(faceValue: $cents) whole: pointCostFor(faceValue: $whole) } }
    }"""
    variables = {"id": encode_global_id("Reward", "U000002"), "cents": "7.50", "whole": "7"}

    node = gql(gateway, query, variables, token=gateway.token(user()))["data"]["node"]

    assert node["cents"] is None
    assert isinstance(node["whole"], int) and node["whole"] > 0


def test_given_tangos_one_per_second_limit_and_the_default_client_limit_then_sequential_calls_draw_no_429(
    tmp_path: Path,
) -> None:
    from giftgraph.settings import Settings

    default_limit = Settings.model_fields["tango_rate_limit_per_second"].default
    # The fake measures arrivals, which a loaded machine can bunch by ~0.1 s out of the 1.11 s spacing;
    # a 0.95 s window allows for that and still refuses any default limit above about 1.05/s.
    with running_fake_tango(rate_limit=1, rate_window=0.95) as limited:
        # The limiter's waits only make calls slower: a generous budget keeps a loaded machine from timing out.
        settings = gateway_settings(
            tmp_path, limited, tango_rate_limit_per_second=default_limit, provider_call_budget_seconds=30
        )
        with live_server(settings) as gateway:
            user_id = user()
            assert gql(gateway, "{ catalog(first: 1) { totalCount } }")["data"]["catalog"]["totalCount"] > 0
            redeemed = [redeem(gateway, user_id, f"paced-{n}") for n in range(3)]

        assert [r["redemption"]["status"] for r in redeemed] == ["FULFILLED"] * 3
        assert limited.state.api_requests.count(("POST", "/orders")) == 3
        assert len(limited.state.api_requests) >= 5  # catalog, balance, three orders: back to back without a limiter
        assert limited.state.rate_limited == 0
