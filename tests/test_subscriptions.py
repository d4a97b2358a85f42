"""Subscriptions over a real graphql-transport-ws WebSocket: balance and redemption events, auth, lifecycle."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
import websockets

from tests.support import (
    TEST_SECRET,
    LiveServer,
    WsClient,
    agql,
    live_server,
    make_settings,
    operation,
    reward_to_redeem,
    ws_connect,
)

STARTING_BALANCE = 10_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path_factory.mktemp("subscriptions"), sandbox_fulfilment_delay=0.2)
    with live_server(settings) as running:
        yield running


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def bearer(server: LiveServer, user_id: str) -> dict[str, str]:
    return {"authorization": f"Bearer {server.token(user_id)}"}


async def next_data(client: WsClient, op_id: str, field: str) -> dict[str, Any]:
    message = await client.receive()
    assert message["type"] == "next" and message["id"] == op_id, message
    assert "errors" not in message["payload"], message
    return message["payload"]["data"][field]


async def wait_for_subscribers(server: LiveServer, user_id: str, count: int) -> None:
    """Subscriptions that yield nothing at first give no sign they are live: wait until the hub has them."""
    deadline = time.monotonic() + 10
    while server.services.events.subscriber_count(user_id) < count:
        assert time.monotonic() < deadline, "the subscription never reached the event hub"
        await asyncio.sleep(0.01)


async def redeem(server: LiveServer, user_id: str, reward: dict[str, Any]) -> dict[str, Any]:
    variables = {
        "input": {
            "clientMutationId": uuid.uuid4().hex,
            "rewardId": reward["rewardId"],
            "faceValue": reward["faceValue"],
        }
    }
    async with httpx.AsyncClient() as client:
        body = await agql(client, server, operation("Redeem"), variables, token=server.token(user_id))
    payload = body["data"]["redeem"]
    assert payload["userErrors"] == [], payload
    return payload


def balance_of(data: dict[str, Any]) -> tuple[int, int]:
    return data["available"], data["pending"]


# balanceChanged


@pytest.mark.anyio
async def test_given_a_balance_subscription_when_it_starts_then_the_current_balance_comes_first(
    server: LiveServer,
) -> None:
    user = new_user()
    async with ws_connect(server, init_payload=bearer(server, user)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        op = await ws.subscribe(operation("BalanceChanged"))

        first = await next_data(ws, op, "balanceChanged")

    assert balance_of(first) == (STARTING_BALANCE, 0)


@pytest.mark.anyio
async def test_given_a_balance_subscription_when_a_redemption_is_debited_and_fulfilled_then_one_event_for_each(
    server: LiveServer,
) -> None:
    user = new_user()
    reward = reward_to_redeem(server)
    async with ws_connect(server, init_payload=bearer(server, user)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        op = await ws.subscribe(operation("BalanceChanged"))
        await next_data(ws, op, "balanceChanged")

        await redeem(server, user, reward)
        debited = await next_data(ws, op, "balanceChanged")
        settled = await next_data(ws, op, "balanceChanged")

    points = reward["points"]
    assert [balance_of(debited), balance_of(settled)] == [
        (STARTING_BALANCE - points, points),
        (STARTING_BALANCE - points, 0),
    ]


@pytest.mark.anyio
async def test_given_a_balance_subscription_when_a_redemption_fails_then_the_refund_restores_the_balance(
    server: LiveServer,
) -> None:
    user = new_user()
    reward = reward_to_redeem(server, failing=True)
    async with ws_connect(server, init_payload=bearer(server, user)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        op = await ws.subscribe(operation("BalanceChanged"))
        await next_data(ws, op, "balanceChanged")

        await redeem(server, user, reward)
        debited = await next_data(ws, op, "balanceChanged")
        refunded = await next_data(ws, op, "balanceChanged")

    points = reward["points"]
    assert [balance_of(debited), balance_of(refunded)] == [
        (STARTING_BALANCE - points, points),
        (STARTING_BALANCE, 0),
    ]


# redemptionUpdated


@pytest.mark.anyio
async def test_given_a_redemption_subscription_when_a_reward_is_redeemed_then_pending_then_fulfilled_with_the_card(
    server: LiveServer,
) -> None:
    user = new_user()
    async with ws_connect(server, init_payload=bearer(server, user)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        op = await ws.subscribe(operation("RedemptionUpdated"))
        await wait_for_subscribers(server, user, 1)

        payload = await redeem(server, user, reward_to_redeem(server))
        pending = await next_data(ws, op, "redemptionUpdated")
        fulfilled = await next_data(ws, op, "redemptionUpdated")

    redemption_id = payload["redemption"]["id"]
    assert (pending["id"], pending["status"], pending["giftCard"]) == (redemption_id, "PENDING", None)
    assert (fulfilled["id"], fulfilled["status"]) == (redemption_id, "FULFILLED")
    card = fulfilled["giftCard"]
    assert card is not None and all(card[key] for key in ("code", "pin", "claimUrl", "expiresAt")), card


@pytest.mark.anyio
async def test_given_a_redemption_subscription_when_the_reward_fails_then_pending_then_failed_with_a_reason(
    server: LiveServer,
) -> None:
    user = new_user()
    async with ws_connect(server, init_payload=bearer(server, user)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        op = await ws.subscribe(operation("RedemptionUpdated"))
        await wait_for_subscribers(server, user, 1)

        payload = await redeem(server, user, reward_to_redeem(server, failing=True))
        pending = await next_data(ws, op, "redemptionUpdated")
        failed = await next_data(ws, op, "redemptionUpdated")

    redemption_id = payload["redemption"]["id"]
    assert (pending["id"], pending["status"]) == (redemption_id, "PENDING")
    assert (failed["id"], failed["status"], failed["giftCard"]) == (redemption_id, "FAILED", None)
    assert failed["failureReason"]


# Isolation between users


@pytest.mark.anyio
async def test_given_two_users_subscribed_when_one_redeems_then_the_other_gets_no_redemption_event(
    server: LiveServer,
) -> None:
    alice, bob = new_user(), new_user()
    async with (
        ws_connect(server, init_payload=bearer(server, alice)) as alice_ws,
        ws_connect(server, init_payload=bearer(server, bob)) as bob_ws,
    ):
        assert (await alice_ws.receive())["type"] == "connection_ack"
        assert (await bob_ws.receive())["type"] == "connection_ack"
        alice_op = await alice_ws.subscribe(operation("RedemptionUpdated"))
        bob_op = await bob_ws.subscribe(operation("RedemptionUpdated"))
        await wait_for_subscribers(server, alice, 1)
        await wait_for_subscribers(server, bob, 1)

        await redeem(server, bob, reward_to_redeem(server, failing=True))
        await next_data(bob_ws, bob_op, "redemptionUpdated")  # PENDING
        await next_data(bob_ws, bob_op, "redemptionUpdated")  # FAILED: bob's events are all out
        alice_payload = await redeem(server, alice, reward_to_redeem(server))
        alice_first = await next_data(alice_ws, alice_op, "redemptionUpdated")

    assert alice_first["id"] == alice_payload["redemption"]["id"]


@pytest.mark.anyio
async def test_given_two_users_subscribed_when_one_redeems_then_the_other_gets_no_balance_event(
    server: LiveServer,
) -> None:
    alice, bob = new_user(), new_user()
    bobs_reward, alices_reward = reward_to_redeem(server, failing=True), reward_to_redeem(server)
    assert bobs_reward["points"] != alices_reward["points"]  # so a leaked event is recognisable
    async with (
        ws_connect(server, init_payload=bearer(server, alice)) as alice_ws,
        ws_connect(server, init_payload=bearer(server, bob)) as bob_ws,
    ):
        assert (await alice_ws.receive())["type"] == "connection_ack"
        assert (await bob_ws.receive())["type"] == "connection_ack"
        alice_op = await alice_ws.subscribe(operation("BalanceChanged"))
        bob_op = await bob_ws.subscribe(operation("BalanceChanged"))
        await next_data(alice_ws, alice_op, "balanceChanged")
        await next_data(bob_ws, bob_op, "balanceChanged")

        await redeem(server, bob, bobs_reward)
        await next_data(bob_ws, bob_op, "balanceChanged")  # debit
        await next_data(bob_ws, bob_op, "balanceChanged")  # refund: bob's events are all out
        await redeem(server, alice, alices_reward)
        alice_next = await next_data(alice_ws, alice_op, "balanceChanged")

    points = alices_reward["points"]
    assert balance_of(alice_next) == (STARTING_BALANCE - points, points)


# Authentication of the connection


def _token(claims: dict[str, Any], secret: str = TEST_SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _rejected_payloads() -> dict[str, dict[str, Any]]:
    now = int(time.time())
    return {
        "no token": {},
        "malformed token": {"authorization": "Bearer not-a-jwt"},
        "expired token": {"authorization": f"Bearer {_token({'sub': 'u1', 'exp': now - 3600})}"},
        "wrongly signed token": {
            "authorization": f"Bearer {_token({'sub': 'u1', 'exp': now + 3600}, 'another-secret-0123456789abcdef-xyz')}"
        },
        "not a bearer token": {"authorization": "Basic dXNlcjpwYXNz"},
    }


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(_rejected_payloads()))
async def test_given_connection_init_without_a_valid_token_when_sent_then_the_socket_closes_with_4403(
    server: LiveServer, case: str
) -> None:
    async with ws_connect(server, init_payload=_rejected_payloads()[case]) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.receive()

    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


@pytest.mark.anyio
async def test_given_no_connection_init_when_subscribing_then_the_socket_closes_with_4401(server: LiveServer) -> None:
    async with websockets.connect(server.ws_url, subprotocols=["graphql-transport-ws"]) as ws:
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": operation("BalanceChanged")}}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)

    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401


# Lifecycle


@pytest.mark.anyio
async def test_given_a_completed_subscription_when_the_balance_changes_then_it_sends_nothing_more(
    server: LiveServer,
) -> None:
    user = new_user()
    async with ws_connect(server, init_payload=bearer(server, user)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        balance_op = await ws.subscribe(operation("BalanceChanged"))
        await next_data(ws, balance_op, "balanceChanged")
        await ws.ws.send(json.dumps({"id": balance_op, "type": "complete"}))
        # A second subscription on the same socket marks when the first would have spoken.
        redemption_op = await ws.subscribe(operation("RedemptionUpdated"))
        await wait_for_subscribers(server, user, 1)

        await redeem(server, user, reward_to_redeem(server))
        received: list[dict[str, Any]] = []
        while not received or received[-1].get("payload", {}).get("data", {}).get("redemptionUpdated", {}).get(
            "status"
        ) != "FULFILLED":
            received.append(await ws.receive())

    assert [m for m in received if m.get("id") == balance_op] == []
    assert {m["id"] for m in received} == {redemption_op}


@pytest.mark.anyio
async def test_given_a_subscription_when_it_is_completed_then_the_server_releases_it(server: LiveServer) -> None:
    user = new_user()
    async with ws_connect(server, init_payload=bearer(server, user)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        op = await ws.subscribe(operation("BalanceChanged"))
        await next_data(ws, op, "balanceChanged")
        assert server.services.events.subscriber_count(user) == 1

        await ws.ws.send(json.dumps({"id": op, "type": "complete"}))
        deadline = time.monotonic() + 10
        while server.services.events.subscriber_count(user) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    assert server.services.events.subscriber_count(user) == 0


@pytest.mark.anyio
async def test_given_a_subscription_when_the_socket_closes_then_the_server_releases_it(server: LiveServer) -> None:
    user = new_user()
    async with ws_connect(server, init_payload=bearer(server, user)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        op = await ws.subscribe(operation("BalanceChanged"))
        await next_data(ws, op, "balanceChanged")

    deadline = time.monotonic() + 10
    while server.services.events.subscriber_count(user) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert server.services.events.subscriber_count(user) == 0


# Provider outages


@pytest.mark.anyio
async def test_given_balance_lookups_failing_when_a_balance_subscription_starts_then_provider_unavailable(
    server: LiveServer,
) -> None:
    user = new_user()
    async with ws_connect(server, init_payload=bearer(server, user)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        server.provider.faults.fail_next("get_balances")
        op = await ws.subscribe(operation("BalanceChanged"))

        message = await ws.receive()

    assert (message["type"], message["id"]) == ("next", op)
    assert [e["extensions"]["code"] for e in message["payload"]["errors"]] == ["PROVIDER_UNAVAILABLE"]


@pytest.mark.anyio
async def test_given_a_settled_redemption_when_a_late_pending_event_arrives_then_the_subscriber_never_sees_it_go_back(
    server: LiveServer,
) -> None:
    # Events reach the hub from the redeem answer, webhooks and the reconciler: their order is not guaranteed.
    user = new_user()
    async with ws_connect(server, init_payload=bearer(server, user)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        op = await ws.subscribe(operation("RedemptionUpdated"))
        await wait_for_subscribers(server, user, 1)
        payload = await redeem(server, user, reward_to_redeem(server))
        pending = await next_data(ws, op, "redemptionUpdated")
        fulfilled = await next_data(ws, op, "redemptionUpdated")
        assert (pending["status"], fulfilled["status"]) == ("PENDING", "FULFILLED")

        await asyncio.to_thread(publish_stale_pending, server, user, payload["redemption"]["id"])
        # A second redemption afterwards proves the stream goes on and the stale event was dropped.
        second = await redeem(server, user, reward_to_redeem(server))
        after = await next_data(ws, op, "redemptionUpdated")

    assert (after["id"], after["status"]) == (second["redemption"]["id"], "PENDING")


def publish_stale_pending(server: LiveServer, user: str, redemption_id: str) -> None:
    """Publish, on the server's loop, the redemption as it was before it settled."""
    import dataclasses

    from providers import RedemptionStatus, RedemptionUpdated
    from resolvers.ids import decode_global_id
    from tests.support import run_on_server_loop

    async def publish() -> None:
        _, provider_id = decode_global_id(redemption_id, argument="id")
        (settled,) = await server.provider.get_redemptions([provider_id])
        stale = dataclasses.replace(settled, status=RedemptionStatus.PENDING, gift_card=None)
        server.services.events.publish(RedemptionUpdated(user_id=user, redemption=stale))

    run_on_server_loop(server, publish())


@pytest.mark.anyio
async def test_given_a_subscription_when_its_token_expires_then_the_socket_is_closed_with_4403(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    settings = make_settings(tmp_path_factory.mktemp("ws-expiry"), jwt_leeway_seconds=0)
    with live_server(settings) as short:
        user = new_user()
        # 4 s (3-4 s of life, exp being whole seconds): enough for both sockets to start on a loaded machine
        expiring = {"authorization": f"Bearer {short.token(user, ttl_seconds=4)}"}
        lasting = {"authorization": f"Bearer {short.token(user)}"}
        async with ws_connect(short, init_payload=expiring) as ws, ws_connect(short, init_payload=lasting) as other:
            assert (await ws.receive())["type"] == "connection_ack"
            assert (await other.receive())["type"] == "connection_ack"
            await ws.subscribe(operation("BalanceChanged"))
            assert (await ws.receive())["type"] == "next"  # the current balance, while the token holds

            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.receive(timeout=15)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
            # A connection whose token still holds is left alone.
            await other.subscribe(operation("BalanceChanged"))
            assert (await other.receive())["type"] == "next"
