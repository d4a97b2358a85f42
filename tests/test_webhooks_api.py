"""POST /webhooks/{provider} over real HTTP: signed deliveries applied once, in order, to real subscribers.

The embedded sandbox sits behind the gateway as a provider across the network would: its own
in-process events go to a hub nobody listens to, so subscribers learn of its changes only through
the webhooks these tests sign and deliver (as `giftgraph sandbox serve` would).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy
from hypothesis import given, settings
from hypothesis import strategies as st
from standardwebhooks.webhooks import Webhook

from giftgraph.app import create_app, sandbox_provider
from giftgraph.settings import ConfigurationError, Settings
from giftgraph.webhooks import MAX_BODY_BYTES, webhook_secrets
from providers import (
    Balance,
    EventHub,
    RedeemRequest,
    Redemption,
    RedemptionStatus,
    RedemptionUpdated,
    Reward,
    RewardAvailability,
)
from providers.rest.contract import BalanceWire, RedemptionWire
from providers.rest.webhooks import CatalogItemChanged, ProviderWebhook
from providers.sandbox import SandboxConfig, SandboxProvider, failing_reward_ids
from providers.sql import create_engine
from resolvers.catalog_cache import CatalogCache
from resolvers.ids import encode_global_id
from resolvers.pricing import Pricing
from resolvers.webhooks import (
    EVENT_RETENTION_SECONDS,
    PRUNE_INTERVAL_SECONDS,
    WebhookOutcome,
    WebhookService,
    redemption_states,
    webhook_events,
)
from tests.support import (
    LiveServer,
    WsClient,
    gql,
    live_server,
    live_server_with_provider,
    make_settings,
    operation,
    run_on_server_loop,
    ws_connect,
)
from tests.sandbox_service import SandboxService, running_sandbox_service

SECRET = "whsec_" + base64.b64encode(b"giftgraph-webhook-test-secret-01").decode()
ROTATED = "whsec_" + base64.b64encode(b"giftgraph-webhook-test-secret-02").decode()
UNKNOWN = "whsec_" + base64.b64encode(b"giftgraph-webhook-not-our-secret").decode()
STARTING_BALANCE = 10_000
OUT_OF_STOCK_IN = """
query OutOfStock($search: String!) {
  catalog(first: 50, filter: {availability: [OUT_OF_STOCK], search: $search}) { edges { node { id } } }
}
"""


def remote_sandbox(settings: Settings, events: EventHub) -> Any:
    """The sandbox as a remote provider: what it publishes in-process never reaches the gateway's hub."""
    return sandbox_provider(settings, EventHub())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(
        tmp_path_factory.mktemp("webhooks"), webhook_secrets=[SECRET, ROTATED], sandbox_fulfilment_delay=0.1
    )
    with live_server_with_provider(settings, remote_sandbox) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


# Signing and delivering, as the sender does


def signed(
    body: bytes, *, secret: str = SECRET, webhook_id: str | None = None, at: int | None = None
) -> dict[str, str]:
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    at = int(time.time()) if at is None else at
    signature = Webhook(secret).sign(webhook_id, datetime.fromtimestamp(at, tz=UTC), body.decode())
    return {"webhook-id": webhook_id, "webhook-timestamp": str(at), "webhook-signature": signature}


def event(event_type: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"type": event_type, "timestamp": datetime.now(UTC).isoformat(), "data": data}).encode()


def wire(value: Balance | Redemption) -> dict[str, Any]:
    if isinstance(value, Balance):
        return BalanceWire.of(value).model_dump(mode="json")
    return RedemptionWire.of(value, with_card=False).model_dump(mode="json")  # webhooks never carry a card


def settled_event(redemption: Redemption, balance: Balance) -> bytes:
    data = {"redemption": wire(redemption), "balance": wire(balance)}
    return event(f"redemption.{redemption.status.value.lower()}", data)


def catalog_event(reward_id: str, availability: str = "OUT_OF_STOCK") -> bytes:
    return event("catalog.item_changed", {"reward_id": reward_id, "availability": availability})


def deliver(server: LiveServer, body: bytes, headers: dict[str, str], *, provider: str = "sandbox") -> httpx.Response:
    return httpx.post(f"{server.base_url}/webhooks/{provider}", content=body, headers=headers, timeout=30)


async def adeliver(
    client: httpx.AsyncClient, server: LiveServer, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    return await client.post(f"{server.base_url}/webhooks/sandbox", content=body, headers=headers, timeout=30)


# The provider's side


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def a_reward(server: LiveServer, *, failing: bool = False) -> tuple[Reward, int]:
    failing_ids = failing_reward_ids(server.provider.catalog)
    for reward in server.provider.catalog:
        points = server.services.pricing.point_cost(reward)
        if reward.availability is RewardAvailability.AVAILABLE and (reward.id in failing_ids) == failing and points:
            return reward, points
    raise LookupError("no such reward")


def redeem_at_provider(server: LiveServer, user_id: str, *, failing: bool = False) -> Redemption:
    reward, points = a_reward(server, failing=failing)
    request = RedeemRequest(
        user_id=user_id,
        reward_id=reward.id,
        face_value=reward.denomination.min_value,
        points=points,
        idempotency_key=uuid.uuid4().hex,
    )
    return run_on_server_loop(server, server.provider.redeem(request)).redemption


def publish_on_server(server: LiveServer, event: RedemptionUpdated) -> None:
    """Publish on the server's hub, from its own loop, as its other publishers (the redeem answer...) do."""

    async def publish() -> None:
        server.services.events.publish(event)

    run_on_server_loop(server, publish())


def settled_at_provider(server: LiveServer, redemption_id: str) -> tuple[Redemption, Balance]:
    deadline = time.monotonic() + 10
    while True:
        (found,) = run_on_server_loop(server, server.provider.get_redemptions([redemption_id]))
        if found.status is not RedemptionStatus.PENDING:
            (balance,) = run_on_server_loop(server, server.provider.get_balances([found.user_id]))
            return found, balance
        assert time.monotonic() < deadline, "the sandbox never settled the redemption"
        time.sleep(0.02)


# Subscribers


def bearer(server: LiveServer, user_id: str) -> dict[str, str]:
    return {"authorization": f"Bearer {server.token(user_id)}"}


async def next_data(client: WsClient, op_id: str, field: str) -> dict[str, Any]:
    message = await client.receive()
    assert message["type"] == "next" and message["id"] == op_id, message
    assert "errors" not in message["payload"], message
    return message["payload"]["data"][field]


async def subscribed(server: LiveServer, ws: WsClient, user_id: str, name: str) -> str:
    assert (await ws.receive())["type"] == "connection_ack"
    op = await ws.subscribe(operation(name))
    if name == "BalanceChanged":
        await next_data(ws, op, "balanceChanged")  # the current balance comes first
    deadline = time.monotonic() + 10
    while server.services.events.subscriber_count(user_id) < 1:
        assert time.monotonic() < deadline, "the subscription never reached the event hub"
        await asyncio.sleep(0.01)
    return op


# points.earned


@pytest.mark.anyio
async def test_given_points_earned_at_the_provider_when_its_webhook_arrives_then_subscribers_see_the_ledger_balance(
    server: LiveServer,
) -> None:
    user = new_user()
    async with ws_connect(server, init_payload=bearer(server, user)) as ws, httpx.AsyncClient() as client:
        op = await subscribed(server, ws, user, "BalanceChanged")
        transaction, balance = run_on_server_loop(server, server.provider.grant(user, 500))
        body = event(
            "points.earned",
            {"user_id": user, "points": 500, "transaction_id": transaction.id, "balance": wire(balance)},
        )

        response = await adeliver(client, server, body, signed(body))
        seen = await next_data(ws, op, "balanceChanged")

    assert (response.status_code, response.json()) == (200, {"status": "processed"})
    assert (seen["available"], seen["pending"]) == (STARTING_BALANCE + 500, 0)


@pytest.mark.anyio
async def test_given_the_provider_down_when_points_earned_arrives_then_the_events_own_balance_is_published(
    server: LiveServer,
) -> None:
    user = new_user()
    async with ws_connect(server, init_payload=bearer(server, user)) as ws, httpx.AsyncClient() as client:
        op = await subscribed(server, ws, user, "BalanceChanged")
        # Newer than the balance the subscription started with: the ledger credited after it.
        reported = Balance(user_id=user, available=STARTING_BALANCE + 777, pending=0, updated_at=datetime.now(UTC))
        data = {"user_id": user, "points": 777, "transaction_id": "tx_x", "balance": wire(reported)}
        body = event("points.earned", data)
        server.provider.faults.fail_next("get_balances")

        response = await adeliver(client, server, body, signed(body))
        seen = await next_data(ws, op, "balanceChanged")

    assert response.status_code == 200
    assert seen["available"] == STARTING_BALANCE + 777


# redemption.fulfilled / redemption.failed


@pytest.mark.anyio
async def test_given_a_fulfilled_webhook_without_a_card_when_it_arrives_then_subscribers_get_the_card_from_the_provider(
    server: LiveServer,
) -> None:
    user = new_user()
    async with ws_connect(server, init_payload=bearer(server, user)) as ws, httpx.AsyncClient() as client:
        op = await subscribed(server, ws, user, "RedemptionUpdated")
        redemption, balance = settled_at_provider(server, redeem_at_provider(server, user).id)
        body = settled_event(redemption, balance)
        assert b'gift_card": null' in body

        response = await adeliver(client, server, body, signed(body))
        seen = await next_data(ws, op, "redemptionUpdated")

    assert response.status_code == 200
    assert (seen["id"], seen["status"]) == (encode_global_id("Redemption", redemption.id), "FULFILLED")
    assert seen["giftCard"] is not None and seen["giftCard"]["code"]


@pytest.mark.anyio
async def test_given_the_provider_down_when_a_failed_webhook_arrives_then_the_events_redemption_is_published(
    server: LiveServer,
) -> None:
    user = new_user()
    redemption, balance = settled_at_provider(server, redeem_at_provider(server, user, failing=True).id)
    body = settled_event(redemption, balance)
    async with ws_connect(server, init_payload=bearer(server, user)) as ws, httpx.AsyncClient() as client:
        assert (await ws.receive())["type"] == "connection_ack"
        redemption_op = await ws.subscribe(operation("RedemptionUpdated"))
        balance_op = await ws.subscribe(operation("BalanceChanged"))
        current = await next_data(ws, balance_op, "balanceChanged")
        assert current["available"] == STARTING_BALANCE  # refunded at the provider already
        server.provider.faults.fail_next("get_redemptions")
        server.provider.faults.fail_next("get_balances")

        response = await adeliver(client, server, body, signed(body))
        seen = await next_data(ws, redemption_op, "redemptionUpdated")

    assert response.status_code == 200
    assert (seen["status"], seen["failureReason"], seen["giftCard"]) == ("FAILED", redemption.failure_reason, None)


def test_given_the_provider_down_when_a_fulfilled_webhook_arrives_then_503_and_the_retry_processes_it(
    server: LiveServer,
) -> None:
    redemption, balance = settled_at_provider(server, redeem_at_provider(server, new_user()).id)
    body = settled_event(redemption, balance)
    headers = signed(body)
    server.provider.faults.fail_next("get_redemptions")

    deferred = deliver(server, body, headers)
    retried = deliver(server, body, headers)

    assert deferred.status_code == 503
    assert deferred.headers["retry-after"] == "5"
    assert deferred.json()["error"]["code"] == "unavailable"
    assert (retried.status_code, retried.json()) == (200, {"status": "processed"})


def test_given_the_provider_still_pending_when_a_fulfilled_webhook_arrives_then_503_until_the_card_is_readable(
    server: LiveServer,
) -> None:
    provider = server.provider
    original = provider.config
    provider.config = dataclasses.replace(original, fulfilment_delay=3600)  # stays PENDING at the provider
    try:
        pending = redeem_at_provider(server, new_user())
    finally:
        provider.config = original
    (balance,) = run_on_server_loop(server, provider.get_balances([pending.user_id]))
    claimed = dataclasses.replace(pending, status=RedemptionStatus.FULFILLED, updated_at=datetime.now(UTC))
    body = settled_event(claimed, balance)

    response = deliver(server, body, signed(body))

    assert response.status_code == 503 and response.headers["retry-after"]


# Once per event id


@pytest.mark.anyio
async def test_given_a_processed_event_when_delivered_again_then_200_duplicate_and_nothing_is_published_twice(
    server: LiveServer,
) -> None:
    user = new_user()
    first, first_balance = settled_at_provider(server, redeem_at_provider(server, user).id)
    marker, marker_balance = settled_at_provider(server, redeem_at_provider(server, user, failing=True).id)
    body = settled_event(first, first_balance)
    headers = signed(body)
    async with ws_connect(server, init_payload=bearer(server, user)) as ws, httpx.AsyncClient() as client:
        op = await subscribed(server, ws, user, "RedemptionUpdated")

        statuses = [(await adeliver(client, server, body, headers)).json()["status"] for _ in range(3)]
        marker_body = settled_event(marker, marker_balance)
        await adeliver(client, server, marker_body, signed(marker_body))
        seen = [await next_data(ws, op, "redemptionUpdated") for _ in range(2)]

    assert statuses == ["processed", "duplicate", "duplicate"]
    assert [item["status"] for item in seen] == ["FULFILLED", "FAILED"]  # the marker came next: no second FULFILLED


@pytest.mark.anyio
async def test_given_concurrent_deliveries_of_one_event_when_they_race_then_exactly_one_processes_it(
    server: LiveServer,
) -> None:
    user = new_user()
    first, first_balance = settled_at_provider(server, redeem_at_provider(server, user).id)
    marker, marker_balance = settled_at_provider(server, redeem_at_provider(server, user, failing=True).id)
    body = settled_event(first, first_balance)
    headers = signed(body)
    async with ws_connect(server, init_payload=bearer(server, user)) as ws, httpx.AsyncClient() as client:
        op = await subscribed(server, ws, user, "RedemptionUpdated")

        responses = await asyncio.gather(*(adeliver(client, server, body, headers) for _ in range(12)))
        marker_body = settled_event(marker, marker_balance)
        await adeliver(client, server, marker_body, signed(marker_body))
        seen = [await next_data(ws, op, "redemptionUpdated") for _ in range(2)]

    assert {response.status_code for response in responses} == {200}
    assert Counter(response.json()["status"] for response in responses) == {"processed": 1, "duplicate": 11}
    assert [item["status"] for item in seen] == ["FULFILLED", "FAILED"]


# Retention


@pytest.mark.anyio
async def test_given_a_gateway_that_keeps_running_when_event_ids_and_states_pass_retention_then_they_are_dropped(
    tmp_path: Path,
) -> None:
    now = [1_700_000_000.0]  # the service's clock, moved by hand
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}", logging_name="test-retention")
    provider = SandboxProvider(database_url=f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}", events=EventHub())
    catalog = CatalogCache(provider, Pricing({"USD": Decimal(100)}), stable_ttl=60, volatile_ttl=30, max_stale=60)
    service = WebhookService(engine, provider, EventHub(), catalog, clock=lambda: now[0])

    def changed(event_id: str) -> ProviderWebhook:
        data = CatalogItemChanged(reward_id="rw_1", availability=RewardAvailability.OUT_OF_STOCK)
        return ProviderWebhook(id=event_id, type="catalog.item_changed", occurred_at=datetime.now(UTC), data=data)

    async def stored() -> set[str]:
        async with engine.connect() as conn:
            return set((await conn.execute(sqlalchemy.select(webhook_events.c.event_id))).scalars())

    async def states() -> set[str]:
        async with engine.connect() as conn:
            return set((await conn.execute(sqlalchemy.select(redemption_states.c.redemption_id))).scalars())

    try:
        await service.start()
        # Redemption states as webhooks leave them, keyed by the provider's updated_at.
        async with engine.begin() as conn:
            await conn.execute(
                sqlalchemy.insert(redemption_states),
                [
                    {"redemption_id": "rd_old", "status": "FULFILLED", "updated_at": now[0] + 10},
                    {
                        "redemption_id": "rd_recent",
                        "status": "FAILED",
                        "updated_at": now[0] + 2 * PRUNE_INTERVAL_SECONDS,
                    },
                ],
            )
        await service.handle("sandbox", changed("msg_old"))
        now[0] += EVENT_RETENTION_SECONDS - 1
        await service.handle("sandbox", changed("msg_recent"))
        kept_within_retention = await stored()
        states_within_retention = await states()
        now[0] += PRUNE_INTERVAL_SECONDS
        outcome = await service.handle("sandbox", changed("msg_new"))
        kept = await stored()
        states_kept = await states()
    finally:
        await engine.dispose()

    assert kept_within_retention == {"msg_old", "msg_recent"}
    assert states_within_retention == {"rd_old", "rd_recent"}
    assert outcome is WebhookOutcome.PROCESSED
    assert kept == {"msg_recent", "msg_new"}  # no restart needed
    assert states_kept == {"rd_recent"}


# Order


@pytest.mark.anyio
async def test_given_a_fulfilled_redemption_when_a_stale_event_and_a_late_pending_follow_then_it_stays_fulfilled(
    server: LiveServer,
) -> None:
    user = new_user()
    fulfilled, balance = settled_at_provider(server, redeem_at_provider(server, user).id)
    marker, marker_balance = settled_at_provider(server, redeem_at_provider(server, user, failing=True).id)
    stale = dataclasses.replace(
        fulfilled, status=RedemptionStatus.FAILED, failure_reason="late", updated_at=fulfilled.created_at
    )
    late_pending = dataclasses.replace(fulfilled, status=RedemptionStatus.PENDING, updated_at=datetime.now(UTC))
    async with ws_connect(server, init_payload=bearer(server, user)) as ws, httpx.AsyncClient() as client:
        op = await subscribed(server, ws, user, "RedemptionUpdated")
        fulfilled_body, stale_body = settled_event(fulfilled, balance), settled_event(stale, balance)

        applied = await adeliver(client, server, fulfilled_body, signed(fulfilled_body))
        ignored = await adeliver(client, server, stale_body, signed(stale_body))
        publish_on_server(server, RedemptionUpdated(user_id=user, redemption=late_pending))  # a late redeem answer
        marker_body = settled_event(marker, marker_balance)
        await adeliver(client, server, marker_body, signed(marker_body))
        seen = [await next_data(ws, op, "redemptionUpdated") for _ in range(2)]

    assert (applied.json(), ignored.json()) == ({"status": "processed"}, {"status": "processed"})
    assert [(item["id"], item["status"]) for item in seen] == [
        (encode_global_id("Redemption", fulfilled.id), "FULFILLED"),
        (encode_global_id("Redemption", marker.id), "FAILED"),
    ]


@pytest.mark.anyio
async def test_given_two_deliveries_of_distinct_events_about_one_redemption_when_they_race_then_both_are_recorded(
    server: LiveServer,
) -> None:
    # The provider sent the same news under two event ids: each is answered 200 only once stored.
    user = new_user()
    fulfilled, balance = settled_at_provider(server, redeem_at_provider(server, user).id)
    marker, marker_balance = settled_at_provider(server, redeem_at_provider(server, user, failing=True).id)
    body = settled_event(fulfilled, balance)
    first, second = signed(body), signed(body)
    async with ws_connect(server, init_payload=bearer(server, user)) as ws, httpx.AsyncClient() as client:
        op = await subscribed(server, ws, user, "RedemptionUpdated")

        raced = await asyncio.gather(adeliver(client, server, body, first), adeliver(client, server, body, second))
        again = await asyncio.gather(adeliver(client, server, body, first), adeliver(client, server, body, second))
        marker_body = settled_event(marker, marker_balance)
        await adeliver(client, server, marker_body, signed(marker_body))
        seen = [await next_data(ws, op, "redemptionUpdated") for _ in range(2)]

    assert [(r.status_code, r.json()) for r in raced] == [(200, {"status": "processed"})] * 2
    assert [r.json() for r in again] == [{"status": "duplicate"}] * 2  # both ids were stored
    assert [item["status"] for item in seen] == ["FULFILLED", "FAILED"]  # the news was published once


# catalog.item_changed


def test_given_a_cached_catalog_when_catalog_item_changed_arrives_then_the_next_catalog_query_shows_the_change(
    server: LiveServer,
) -> None:
    reward, _ = a_reward(server)
    gid = encode_global_id("Reward", reward.id)

    def out_of_stock() -> set[str]:
        body = gql(server, OUT_OF_STOCK_IN, {"search": reward.name})
        assert "errors" not in body, body
        return {edge["node"]["id"] for edge in body["data"]["catalog"]["edges"]}

    assert gid not in out_of_stock()  # cached now
    server.provider.set_availability(reward.id, RewardAvailability.OUT_OF_STOCK)
    try:
        still_cached = out_of_stock()
        body = catalog_event(reward.id)
        response = deliver(server, body, signed(body))
        after = out_of_stock()
    finally:
        server.provider.set_availability(reward.id, RewardAvailability.AVAILABLE)
        server.services.catalog.invalidate()

    assert gid not in still_cached
    assert response.status_code == 200
    assert gid in after


# Refusals: nothing is processed, nothing answers 500


def _unsigned(body: bytes) -> dict[str, str]:
    headers = signed(body)
    del headers["webhook-signature"]
    return headers


REJECTED = {
    "unknown secret": lambda body, wid: signed(body, secret=UNKNOWN, webhook_id=wid),
    # Well outside the 5-minute tolerance: a future stamp only 1 s past it could fall inside by the time a
    # loaded machine serves the request. test_webhooks_verify pins the exact boundary with a fixed clock.
    "stale timestamp": lambda body, wid: signed(body, webhook_id=wid, at=int(time.time()) - 400),
    "future timestamp": lambda body, wid: signed(body, webhook_id=wid, at=int(time.time()) + 400),
    "no signature": lambda body, wid: {**_unsigned(body), "webhook-id": wid},
    "malformed signature": lambda body, wid: {**signed(body, webhook_id=wid), "webhook-signature": "v1,!!!"},
    "tampered body": lambda body, wid: signed(body.replace(b"AVAILABLE", b"DISCONTINUED"), webhook_id=wid),
    "no headers": lambda body, wid: {},
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_given_a_delivery_not_proven_to_come_from_the_provider_when_posted_then_401_and_nothing_is_recorded(
    server: LiveServer, case: str
) -> None:
    reward, _ = a_reward(server)
    body, webhook_id = catalog_event(reward.id, "AVAILABLE"), f"msg_{uuid.uuid4().hex}"

    rejected = deliver(server, body, REJECTED[case](body, webhook_id))
    genuine = deliver(server, body, signed(body, webhook_id=webhook_id))

    assert rejected.status_code == 401
    assert rejected.json()["error"]["code"] == "invalid_signature"
    assert genuine.json() == {"status": "processed"}  # the refused delivery left no trace of its id


def test_given_a_rotated_secret_when_it_signs_then_the_delivery_is_accepted(server: LiveServer) -> None:
    body = catalog_event(a_reward(server)[0].id, "AVAILABLE")

    assert deliver(server, body, signed(body, secret=ROTATED)).status_code == 200


@pytest.mark.parametrize("body", [b"not json", b"{}", b'{"type": "points.earned", "timestamp": "x", "data": {}}'])
def test_given_a_signed_body_that_is_not_an_event_when_posted_then_400_and_nothing_is_recorded(
    server: LiveServer, body: bytes
) -> None:
    headers = signed(body)
    good = catalog_event(a_reward(server)[0].id, "AVAILABLE")

    response = deliver(server, body, headers)
    later = deliver(server, good, signed(good, webhook_id=headers["webhook-id"]))

    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_event"
    assert later.json() == {"status": "processed"}


def test_given_a_signed_event_of_an_unknown_type_when_posted_then_200_ignored(server: LiveServer) -> None:
    body = event("loyalty.tier_changed", {"tier": "gold"})

    response = deliver(server, body, signed(body))

    assert (response.status_code, response.json()) == (200, {"status": "ignored"})


def test_given_an_unknown_provider_when_posted_then_404(server: LiveServer) -> None:
    body = catalog_event("rw")

    response = deliver(server, body, signed(body), provider="tremendous")

    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


def test_given_a_get_when_sent_to_the_webhook_route_then_405(server: LiveServer) -> None:
    assert httpx.get(f"{server.base_url}/webhooks/sandbox").status_code == 405


def test_given_a_body_over_the_cap_when_posted_then_413_whether_declared_or_streamed(server: LiveServer) -> None:
    big = b"x" * (MAX_BODY_BYTES + 1)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the cap must hold while reading
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    declared = deliver(server, big, signed(b"{}"))
    streamed = httpx.post(f"{server.base_url}/webhooks/sandbox", content=chunks(), headers=signed(b"{}"), timeout=30)

    assert (declared.status_code, streamed.status_code) == (413, 413)


def test_given_a_browser_style_post_when_it_is_a_signed_webhook_then_no_csrf_check_gets_in_the_way(
    server: LiveServer,
) -> None:
    body = catalog_event(a_reward(server)[0].id, "AVAILABLE")

    response = deliver(server, body, {**signed(body), "content-type": "text/plain"})

    assert response.status_code == 200


@given(
    body=st.binary(max_size=300),
    headers=st.dictionaries(
        st.sampled_from(["webhook-id", "webhook-timestamp", "webhook-signature", "content-type"]),
        st.from_regex(r"[!-~]([ -~]{0,58}[!-~])?", fullmatch=True),  # what an HTTP client can send
    ),
)
@settings(max_examples=50, deadline=None)
def test_given_garbage_when_posted_then_never_a_server_error(
    server: LiveServer, http: httpx.Client, body: bytes, headers: dict[str, str]
) -> None:
    response = http.post(f"{server.base_url}/webhooks/sandbox", content=body, headers=headers)

    assert response.status_code in (400, 401), response.text
    assert "error" in response.json()


def test_given_a_delivery_when_processed_then_the_log_names_the_event_id_and_type_and_never_the_secret(
    server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    body = catalog_event(a_reward(server)[0].id, "AVAILABLE")
    headers = signed(body)
    caplog.set_level(logging.INFO, logger="giftgraph.webhooks")

    deliver(server, body, headers)
    deliver(server, body, {**headers, "webhook-signature": "v1,AAAA"})

    records = [record for record in caplog.records if record.name == "giftgraph.webhooks"]
    processed = [record for record in records if record.getMessage() == "webhook processed"]
    assert [(r.webhook_id, r.webhook_type) for r in processed] == [(headers["webhook-id"], "catalog.item_changed")]
    text = "\n".join(f"{record.getMessage()} {record.__dict__}" for record in records)
    assert SECRET[6:] not in text and headers["webhook-signature"] not in text and "AVAILABLE" not in text


# Configuration


def test_given_no_webhook_secret_when_a_webhook_arrives_then_404(tmp_path: Any) -> None:
    with live_server(make_settings(tmp_path)) as bare:
        body = catalog_event("rw")
        response = deliver(bare, body, signed(body))

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "webhooks are not configured for this provider"


def test_given_a_webhook_secret_that_is_not_one_when_the_app_is_built_then_a_configuration_error_without_it(
    tmp_path: Any,
) -> None:
    with pytest.raises(ConfigurationError, match="webhook secret #2") as raised:
        create_app(make_settings(tmp_path, webhook_secrets=[SECRET, "whsec_tooshort"]))

    assert "tooshort" not in str(raised.value)


def test_given_a_local_rest_sandbox_in_development_when_no_secret_is_set_then_the_shared_generated_one_is_used(
    tmp_path: Any,
) -> None:
    from providers.sandbox.credentials import load_or_create

    local = make_settings(tmp_path, provider="rest", provider_base_url="http://127.0.0.1:9000")
    remote = make_settings(tmp_path, provider="rest", provider_base_url="https://provider.example.com")
    configured = make_settings(
        tmp_path, provider="rest", provider_base_url="http://127.0.0.1:9000", webhook_secrets=[SECRET]
    )

    secrets = webhook_secrets(local)

    assert secrets == [load_or_create(tmp_path / "sandbox-credentials.json").webhook_secret]
    assert webhook_secrets(remote) == []
    assert webhook_secrets(configured) == [SECRET]
    assert webhook_secrets(make_settings(tmp_path)) == []  # the embedded sandbox sends no webhooks


def _json_containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)


@given(body=st.text(max_size=300) | st.recursive(st.none() | st.integers() | st.text(max_size=10), _json_containers))
@settings(max_examples=40, deadline=None)
def test_given_a_signed_body_of_any_shape_when_posted_then_never_a_server_error(
    server: LiveServer, http: httpx.Client, body: Any
) -> None:
    if isinstance(body, str):
        raw = body.encode()
    else:
        raw = json.dumps({"type": "points.earned", "timestamp": 0, "data": body}).encode()

    response = http.post(f"{server.base_url}/webhooks/sandbox", content=raw, headers=signed(raw))

    assert response.status_code in (200, 400), response.text


# End to end: `giftgraph sandbox serve` sends, the gateway (GIFTGRAPH_PROVIDER=rest) receives


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SandboxService, LiveServer]]:
    """The sandbox service and a gateway over REST, sharing one data folder, hence the generated credentials
    (API key and webhook secret) as in development; the sender learns the gateway's port once it listens."""
    data_dir = tmp_path_factory.mktemp("webhooks-e2e")
    # Settling takes a second: the redeem answer is published well before the settlement's webhook.
    sandbox_config = SandboxConfig(fulfilment_delay=1.0)
    hook_url = "http://127.0.0.1:9/webhooks/sandbox"
    with running_sandbox_service(data_dir, webhook_url=hook_url, sandbox=sandbox_config) as sandbox:
        settings = make_settings(data_dir, provider="rest", provider_base_url=sandbox.url)
        with live_server(settings) as gateway:
            assert sandbox.webhooks is not None
            sandbox.webhooks.url = f"{gateway.base_url}/webhooks/sandbox"
            yield sandbox, gateway


@pytest.mark.anyio
async def test_given_the_sandbox_service_when_points_are_granted_there_then_a_gateway_subscriber_sees_them(
    stack: tuple[SandboxService, LiveServer],
) -> None:
    sandbox, gateway = stack
    user = new_user()
    async with ws_connect(gateway, init_payload=bearer(gateway, user)) as ws:
        op = await subscribed(gateway, ws, user, "BalanceChanged")

        await asyncio.to_thread(sandbox.grant, user, 250)
        seen = await next_data(ws, op, "balanceChanged")

    assert (seen["available"], seen["pending"]) == (STARTING_BALANCE + 250, 0)


def redeem_variables(sandbox: SandboxService, gateway: LiveServer, *, failing: bool = False) -> dict[str, Any]:
    failing_ids = failing_reward_ids(sandbox.provider.catalog)
    reward = next(
        r
        for r in sandbox.provider.catalog
        if r.availability is RewardAvailability.AVAILABLE
        and (r.id in failing_ids) == failing
        and gateway.services.pricing.point_cost(r)
    )
    return {
        "input": {
            "clientMutationId": uuid.uuid4().hex,
            "rewardId": encode_global_id("Reward", reward.id),
            "faceValue": str(reward.denomination.min_value),
        }
    }


async def updates_until(
    ws: WsClient, fields: dict[str, str], done: Callable[[dict[str, list[dict[str, Any]]]], bool]
) -> dict[str, list[dict[str, Any]]]:
    """What each subscription (op id -> its field) received, until `done` says enough."""
    seen: dict[str, list[dict[str, Any]]] = {op: [] for op in fields}
    while not done(seen):
        message = await ws.receive()
        assert message["type"] == "next" and message["id"] in fields, message
        assert "errors" not in message["payload"], message
        seen[message["id"]].append(message["payload"]["data"][fields[message["id"]]])
    return seen


def balances(updates: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [(update["available"], update["pending"]) for update in updates]


@pytest.mark.anyio
async def test_given_the_sandbox_service_when_a_redemption_is_fulfilled_there_then_the_subscriber_gets_the_card(
    stack: tuple[SandboxService, LiveServer],
) -> None:
    sandbox, gateway = stack
    user = new_user()
    variables = redeem_variables(sandbox, gateway)
    async with ws_connect(gateway, init_payload=bearer(gateway, user)) as ws:
        op = await subscribed(gateway, ws, user, "RedemptionUpdated")

        body = await asyncio.to_thread(gql, gateway, operation("Redeem"), variables, token=gateway.token(user))
        seen = [await next_data(ws, op, "redemptionUpdated")]
        while seen[-1]["status"] == "PENDING":  # the adapter announces the PENDING redemption it created
            seen.append(await next_data(ws, op, "redemptionUpdated"))

    assert body["data"]["redeem"]["userErrors"] == [], body
    assert {item["id"] for item in seen} == {body["data"]["redeem"]["redemption"]["id"]}
    assert seen[-1]["status"] == "FULFILLED"
    assert seen[-1]["giftCard"] is not None and seen[-1]["giftCard"]["code"]


@pytest.mark.anyio
async def test_given_the_sandbox_service_when_it_fulfils_a_redemption_then_the_webhook_reaches_both_subscriptions(
    stack: tuple[SandboxService, LiveServer],
) -> None:
    sandbox, gateway = stack
    user = new_user()
    async with ws_connect(gateway, init_payload=bearer(gateway, user)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        redemption_op = await ws.subscribe(operation("RedemptionUpdated"))
        balance_op = await ws.subscribe(operation("BalanceChanged"))
        assert balances([await next_data(ws, balance_op, "balanceChanged")]) == [(STARTING_BALANCE, 0)]

        body = await asyncio.to_thread(
            gql, gateway, operation("Redeem"), redeem_variables(sandbox, gateway), token=gateway.token(user)
        )
        seen = await updates_until(
            ws,
            {redemption_op: "redemptionUpdated", balance_op: "balanceChanged"},
            lambda seen: len(seen[redemption_op]) == 2 and len(seen[balance_op]) == 2,
        )

    points = body["data"]["redeem"]["redemption"]["points"]
    assert [item["status"] for item in seen[redemption_op]] == ["PENDING", "FULFILLED"]
    assert seen[redemption_op][-1]["giftCard"]["code"]
    # The redeem answer holds the points as pending; the fulfilment's webhook releases them.
    assert balances(seen[balance_op]) == [(STARTING_BALANCE - points, points), (STARTING_BALANCE - points, 0)]


@pytest.mark.anyio
async def test_given_the_sandbox_service_when_a_redemption_fails_there_then_the_subscriber_sees_the_debit_then_the_refund(
    stack: tuple[SandboxService, LiveServer],
) -> None:
    sandbox, gateway = stack
    user = new_user()
    async with ws_connect(gateway, init_payload=bearer(gateway, user)) as ws:
        op = await subscribed(gateway, ws, user, "BalanceChanged")
        variables = redeem_variables(sandbox, gateway, failing=True)

        body = await asyncio.to_thread(gql, gateway, operation("Redeem"), variables, token=gateway.token(user))
        seen = await updates_until(ws, {op: "balanceChanged"}, lambda seen: len(seen[op]) == 2)

    points = body["data"]["redeem"]["redemption"]["points"]
    assert balances(seen[op]) == [(STARTING_BALANCE - points, points), (STARTING_BALANCE, 0)]


def test_given_the_sandbox_service_when_a_rewards_stock_changes_there_then_the_gateways_catalog_follows(
    stack: tuple[SandboxService, LiveServer],
) -> None:
    sandbox, gateway = stack
    reward = next(r for r in sandbox.provider.catalog if r.availability is RewardAvailability.AVAILABLE)
    gid = encode_global_id("Reward", reward.id)

    def out_of_stock() -> set[str]:
        body = gql(gateway, OUT_OF_STOCK_IN, {"search": reward.name})
        assert "errors" not in body, body
        return {edge["node"]["id"] for edge in body["data"]["catalog"]["edges"]}

    assert gid not in out_of_stock()  # cached now
    sandbox.set_availability(reward.id, "OUT_OF_STOCK")
    deadline = time.monotonic() + 10
    while gid not in out_of_stock():
        assert time.monotonic() < deadline, "the catalog never followed the provider's change"
        time.sleep(0.02)
