"""The order saga's edge paths with Tremendous, through real HTTP: points are never refunded while an order may
exist, a definite refusal refunds them, and two gateways sharing a database never order one redemption twice.

The gateway is a real server on loopback; the fake Tremendous (tests/fake_tremendous.py) is another. Each
test reads the provider-side effects from the fake's own state and the user's side through GraphQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from providers import RedeemRequest
from providers.composite import order_reference
from providers.rules import fingerprint
from resolvers.redeem import provider_idempotency_key
from tests.fake_tremendous import API_KEY, PREFIX, FakeTremendous, running_fake_tremendous
from tests.support import LiveServer, eventually, gql, live_server, operation, run_on_server_loop
from tests.test_ledger_provider_api import (
    AMAZON,
    START,
    gateway_settings,
    orders_for,
    redeem,
    redemption,
    user,
    warm_catalog,
)

HISTORY = operation("History")
VIEWER_BALANCE = operation("ViewerBalance")
COST = 2_500  # points for the 25 USD Amazon card
ORDERS = f"{PREFIX}/orders"
FUNDING_SOURCES = f"{PREFIX}/funding_sources"
BAD_GATEWAY = "<html>Bad Gateway</html>"
SERVER_ERROR = {"errors": {"message": "Internal Server Error", "payload": {}}}
REFUSED = {"errors": {"message": "Reward could not be processed", "payload": {}}}  # a 422 naming no field


@pytest.fixture
def fake() -> Iterator[FakeTremendous]:
    with running_fake_tremendous() as running:
        yield running


@pytest.fixture
def gateway(tmp_path: Path, fake: FakeTremendous) -> Iterator[LiveServer]:
    with live_server(gateway_settings(tmp_path, fake)) as running:
        yield running


def points(gateway: LiveServer, user_id: str) -> tuple[int, int]:
    """(available, pending) as the user sees them."""
    shown = gql(gateway, VIEWER_BALANCE, token=gateway.token(user_id))["data"]["viewer"]["balance"]
    return shown["available"], shown["pending"]


def history(gateway: LiveServer, user_id: str) -> list[str]:
    body = gql(gateway, HISTORY, {"first": 10}, token=gateway.token(user_id))
    return [edge["node"]["kind"] for edge in body["data"]["viewer"]["history"]["edges"]]


def requests_to(fake: FakeTremendous, method: str, path: str) -> int:
    return sum(1 for seen in list(fake.state.requests) if seen == (method, path))


def test_given_a_lost_order_answer_when_the_seller_rejects_our_key_on_look_up_then_pending_until_it_is_restored(
    tmp_path: Path, fake: FakeTremendous
) -> None:
    user_id = user()
    # The reconciler's first look comes 2 x the call budget after the reserve: 6 s to rotate the key before it.
    settings = gateway_settings(tmp_path, fake, provider_call_budget_seconds=3.0, provider_read_timeout=3.0)
    with live_server(settings) as gateway:
        warm_catalog(gateway)
        fake.state.lose_order_answers(500, SERVER_ERROR)  # Tremendous placed the order; its answer never arrived

        first = redeem(gateway, user_id, "lost")
        fake.state.api_key = "rotated-elsewhere"
        refused_before = requests_to(fake, "GET", ORDERS)

        assert first["userErrors"] == [] and first["redemption"]["status"] == "PENDING"
        assert orders_for(fake, user_id, "lost") == 1
        # Several look-ups answered 401: none of them may refund, the order exists.
        eventually(lambda: requests_to(fake, "GET", ORDERS) >= refused_before + 3, timeout=60)
        assert points(gateway, user_id) == (START - COST, COST)

        fake.state.api_key = API_KEY
        eventually(lambda: redemption(gateway, user_id, first["redemption"]["id"])["status"] == "FULFILLED", timeout=60)
        assert orders_for(fake, user_id, "lost") == 1
        assert fake.state.post_orders() == 1  # the reconciler found the order: it never ordered again
        assert history(gateway, user_id) == ["REDEEM", "EARN"]
        assert points(gateway, user_id) == (START - COST, 0)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["executed", "pending-at-the-seller"])
def test_given_an_order_that_may_have_been_committed_when_the_retry_is_refused_then_pending_and_reconciled(
    gateway: LiveServer, fake: FakeTremendous, asynchronous: bool
) -> None:
    user_id = user()
    warm_catalog(gateway)
    fake.state.async_orders = asynchronous
    # The first attempt is processed, then a proxy answers 502; the retry (the same external_id) is refused.
    fake.state.lose_order_answers(502, BAD_GATEWAY)
    fake.state.lose_order_answers(422, REFUSED)

    first = redeem(gateway, user_id, "maybe")

    assert fake.state.post_orders() == 2 and not fake.state.lost_order_answers  # both answers were given
    assert orders_for(fake, user_id, "maybe") == 1
    assert first["userErrors"] == [] and first["redemption"]["status"] == "PENDING"
    assert points(gateway, user_id) == (START - COST, COST)
    if asynchronous:
        # The reconciler finds the order still PENDING at Tremendous: the redemption waits with it.
        eventually(lambda: requests_to(fake, "GET", ORDERS) >= 2, timeout=60)
        assert redemption(gateway, user_id, first["redemption"]["id"])["status"] == "PENDING"
        fake.state.complete_pending()
    eventually(lambda: redemption(gateway, user_id, first["redemption"]["id"])["status"] == "FULFILLED", timeout=60)
    assert orders_for(fake, user_id, "maybe") == 1
    assert fake.state.post_orders() == 2
    assert history(gateway, user_id) == ["REDEEM", "EARN"]
    assert points(gateway, user_id) == (START - COST, 0)


def test_given_a_stale_funding_balance_when_tremendous_answers_402_then_failed_refunded_and_the_next_one_refused(
    gateway: LiveServer, fake: FakeTremendous
) -> None:
    user_id = user()
    warm_catalog(gateway)  # the gateway now trusts 1,000 USD for a minute
    fake.state.balance_cents = 1_000  # drained elsewhere to 10 USD: less than the 25 USD card

    refused = redeem(gateway, user_id, "drained")

    assert refused["userErrors"] == []
    assert refused["redemption"]["status"] == "FAILED"
    assert refused["redemption"]["failureReason"] == "The provider cannot fund this reward right now"
    assert orders_for(fake, user_id, "drained") == 0 and fake.state.post_orders() == 1
    assert history(gateway, user_id) == ["REFUND", "REDEEM", "EARN"]
    assert points(gateway, user_id) == (START, 0)

    # The 402 dropped the cached balance: the next redemption asks Tremendous and is refused before reserving.
    again = redeem(gateway, user_id, "drained-again")

    assert [error["code"] for error in again["userErrors"]] == ["PROVIDER_UNAVAILABLE"]
    assert again["redemption"] is None
    assert fake.state.post_orders() == 1
    assert history(gateway, user_id) == ["REFUND", "REDEEM", "EARN"]
    assert points(gateway, user_id) == (START, 0)


def test_given_two_gateways_on_one_database_when_both_reconcile_a_reserve_left_without_an_order_then_one_post(
    tmp_path: Path, fake: FakeTremendous
) -> None:
    user_id, cmid = user(), "twin"
    key = provider_idempotency_key(user_id, cmid)
    reference = order_reference(key)
    request = RedeemRequest(user_id=user_id, reward_id=AMAZON, face_value=Decimal(25), points=COST, idempotency_key=key)
    # Each POST /orders waits a second at Tremendous' door: plenty of passes of the other reconciler meanwhile.
    fake.state.hold_orders = 1.0
    settings = gateway_settings(tmp_path, fake, provider_call_budget_seconds=3.0, provider_read_timeout=3.0)
    with live_server(settings) as one, live_server(settings) as two:

        async def reserve_only() -> None:  # a saga whose process died after its first step
            (reward,) = await one.provider.get_rewards([AMAZON])
            await one.provider.ledger.reserve(
                request, fingerprint=fingerprint(request), reference=reference, reward=reward
            )

        run_on_server_loop(one, reserve_only())
        found = run_on_server_loop(two, two.provider.ledger.redemption_by_reference(reference))
        assert fake.state.post_orders() == 0

        def fulfilled() -> bool:
            (seen,) = run_on_server_loop(two, two.provider.ledger.redemptions_by_id([found.id]))
            return seen.status.value == "FULFILLED"

        eventually(fulfilled, timeout=60)  # due after 2 x the call budget; then both reconcilers race for it
        eventually(lambda: fake.state.held == 0, timeout=30)  # an order of the other one would be past the door
        time.sleep(0.5)

        assert fake.state.post_orders() == 1
        assert orders_for(fake, user_id, cmid) == 1
        assert points(two, user_id) == (START - COST, 0)


def test_given_readyz_and_metrics_scraped_often_then_tremendous_is_asked_for_the_funding_balance_at_most_once(
    gateway: LiveServer, fake: FakeTremendous
) -> None:
    before = requests_to(fake, "GET", FUNDING_SOURCES)

    ready = [httpx.get(f"{gateway.base_url}/readyz", timeout=10) for _ in range(10)]
    scraped = [httpx.get(f"{gateway.base_url}/metrics", timeout=10).text for _ in range(10)]

    assert all(answer.status_code == 200 for answer in ready)
    assert {answer.json()["checks"]["funding"]["available"] for answer in ready} == {"1000"}
    assert all('giftgraph_provider_funding_balance{provider="tremendous",currency="USD"} 1000' in s for s in scraped)
    assert requests_to(fake, "GET", FUNDING_SOURCES) - before <= 1  # funding_balance_ttl_seconds is 60 here


def test_given_the_seller_failing_then_probes_ask_it_once_per_failure_window_not_once_each(
    tmp_path: Path, fake: FakeTremendous
) -> None:
    unauthorized = {"errors": {"message": "Unauthorized", "payload": {}}}
    with live_server(gateway_settings(tmp_path, fake, funding_balance_ttl_seconds=0)) as gateway:
        fake.state.inject(401, unauthorized, times=100)  # a revoked key: every call refused, none retried
        before = requests_to(fake, "GET", FUNDING_SOURCES)

        ready = [httpx.get(f"{gateway.base_url}/readyz", timeout=10) for _ in range(5)]
        scraped = [httpx.get(f"{gateway.base_url}/metrics", timeout=10).text for _ in range(5)]
        asked = requests_to(fake, "GET", FUNDING_SOURCES) - before

    assert {answer.status_code for answer in ready} == {503}
    assert {answer.json()["checks"]["funding"]["status"] for answer in ready} == {"unavailable"}
    assert all('giftgraph_provider_up{provider="tremendous"} 0' in text for text in scraped)
    # One failed read answers the others for 5 s; a slow machine may straddle one window.
    assert 1 <= asked <= 2
