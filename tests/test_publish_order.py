"""A redemption never moves backwards for a subscriber, whichever path brings its news and in whatever order.

The redeem answer, provider webhooks and the reconciler all publish on one EventHub; the hub passes on
only what moves a redemption forward. First the hub on its own, then the case that needs it: a gateway
over the sandbox service (GIFTGRAPH_PROVIDER=rest) whose redeem answer arrives after the webhook that
settled the redemption.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from providers import EventHub, ProviderEvent, Redemption, RedemptionStatus, RedemptionUpdated
from providers.sandbox import SandboxConfig
from tests.sandbox_service import SandboxService, running_sandbox_service
from tests.support import LiveServer, WsClient, gql, live_server, make_settings, operation, ws_connect
from tests.test_webhooks_api import redeem_variables

pytestmark = pytest.mark.anyio

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def redemption(status: RedemptionStatus = RedemptionStatus.PENDING, *, at: float = 0.0, **changes: Any) -> Redemption:
    """A redemption of user u1 in `status`, updated `at` seconds after NOW."""
    values: dict[str, Any] = {
        "id": "red_1",
        "user_id": "u1",
        "reward_id": "rw_1",
        "face_value": Decimal(10),
        "currency_code": "USD",
        "points": 1000,
        "status": status,
        "gift_card": None,
        "failure_reason": None,
        "created_at": NOW,
        "updated_at": NOW + timedelta(seconds=at),
    }
    values.update(changes)
    return Redemption(**values)


def updated(value: Redemption) -> RedemptionUpdated:
    return RedemptionUpdated(user_id=value.user_id, redemption=value)


def drained(queue: asyncio.Queue[ProviderEvent]) -> list[tuple[str, RedemptionStatus, float]]:
    seen = []
    while not queue.empty():
        event = queue.get_nowait()
        assert isinstance(event, RedemptionUpdated)
        seen.append((event.redemption.id, event.redemption.status, (event.redemption.updated_at - NOW).seconds))
    return seen


# The hub


async def test_given_a_settled_redemption_when_a_late_pending_is_published_then_a_subscriber_who_joined_between_never_gets_it() -> (
    None
):
    hub = EventHub()
    hub.publish(updated(redemption(RedemptionStatus.FULFILLED, at=2)))

    async with hub.subscribe("u1") as queue, hub.subscribe_all() as relay:
        hub.publish(updated(redemption(at=1)))  # the redeem answer, held up on the way

        assert drained(queue) == [] and drained(relay) == []


async def test_given_news_in_any_order_when_published_then_subscribers_see_only_forward_moves() -> None:
    hub = EventHub()
    steps = [
        redemption(at=1),
        redemption(at=0),  # an older PENDING
        redemption(at=1),  # the same PENDING again (a replayed answer)
        redemption(at=2),  # a newer PENDING
        redemption(RedemptionStatus.FULFILLED, at=3),
        redemption(at=4),  # PENDING after FULFILLED
        redemption(RedemptionStatus.FAILED, at=5),  # the other settled status
        redemption(RedemptionStatus.FULFILLED, at=6),  # settled again
    ]

    async with hub.subscribe("u1") as queue:
        for step in steps:
            hub.publish(updated(step))
        seen = drained(queue)

    assert seen == [
        ("red_1", RedemptionStatus.PENDING, 1),
        ("red_1", RedemptionStatus.PENDING, 2),
        ("red_1", RedemptionStatus.FULFILLED, 3),
    ]


async def test_given_a_settled_redemption_when_another_one_is_published_then_it_is_not_held_back() -> None:
    hub = EventHub()
    hub.publish(updated(redemption(RedemptionStatus.FAILED, at=5)))

    async with hub.subscribe("u1") as queue:
        hub.publish(updated(redemption(at=1, id="red_2")))
        seen = drained(queue)

    assert seen == [("red_2", RedemptionStatus.PENDING, 1)]


async def test_given_a_bounded_memory_when_more_redemptions_move_then_the_latest_are_still_guarded() -> None:
    hub = EventHub(remembered=2)
    for n in range(3):
        hub.publish(updated(redemption(RedemptionStatus.FULFILLED, at=5, id=f"red_{n}")))

    async with hub.subscribe("u1") as queue:
        hub.publish(updated(redemption(at=6, id="red_2")))
        hub.publish(updated(redemption(at=6, id="red_1")))
        hub.publish(updated(redemption(at=6, id="red_0")))
        seen = drained(queue)

    # Only red_0, the least recently moved, was forgotten (memory stays at two): its late PENDING gets through.
    assert seen == [("red_0", RedemptionStatus.PENDING, 6)]


# A late redeem answer over the network

HANG_SECONDS = 6.0  # the redeem answer's delay: many times what the webhook takes to settle it at the gateway


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SandboxService, LiveServer]]:
    data_dir = tmp_path_factory.mktemp("publish-order")
    with running_sandbox_service(
        data_dir, webhook_url="http://127.0.0.1:9/webhooks/sandbox", sandbox=SandboxConfig(fulfilment_delay=0.1)
    ) as sandbox:
        # The gateway waits for the held answer rather than giving up on it.
        settings = make_settings(
            data_dir, provider="rest", provider_base_url=sandbox.url, provider_read_timeout=HANG_SECONDS * 5
        )
        with live_server(settings) as gateway:
            assert sandbox.webhooks is not None
            sandbox.webhooks.url = f"{gateway.base_url}/webhooks/sandbox"
            yield sandbox, gateway


async def redemption_updates(server: LiveServer, ws: WsClient, user_id: str, subscribers: int) -> str:
    assert (await ws.receive())["type"] == "connection_ack"
    op = await ws.subscribe(operation("RedemptionUpdated"))
    deadline = asyncio.get_running_loop().time() + 10
    while server.services.events.subscriber_count(user_id) < subscribers:
        assert asyncio.get_running_loop().time() < deadline, "the subscription never reached the event hub"
        await asyncio.sleep(0.01)
    return op


async def next_update(ws: WsClient, op: str) -> dict[str, Any]:
    message = await ws.receive(timeout=HANG_SECONDS * 3)
    assert message["type"] == "next" and message["id"] == op, message
    assert "errors" not in message["payload"], message
    return message["payload"]["data"]["redemptionUpdated"]


async def test_given_a_redeem_answer_arriving_after_the_webhook_that_settled_it_then_no_subscriber_sees_it_go_back(
    stack: tuple[SandboxService, LiveServer],
) -> None:
    sandbox, gateway = stack
    user = f"user-{uuid.uuid4().hex[:12]}"
    init = {"authorization": f"Bearer {gateway.token(user)}"}
    sandbox.fault("redeem", "hang_after_commit", seconds=HANG_SECONDS)  # committed, answered late
    async with ws_connect(gateway, init_payload=init) as early:
        early_op = await redemption_updates(gateway, early, user, 1)
        redeem = asyncio.ensure_future(
            asyncio.to_thread(
                gql,
                gateway,
                operation("Redeem"),
                redeem_variables(sandbox, gateway, failing=False),
                token=gateway.token(user),
            )
        )
        settled = await next_update(early, early_op)  # from the redemption.fulfilled webhook
        async with ws_connect(gateway, init_payload=init) as late:
            late_op = await redemption_updates(gateway, late, user, 2)
            assert not redeem.done(), "the redeem answer came before the late subscriber joined: nothing was tested"

            answered = (await redeem)["data"]["redeem"]
            # A second redemption afterwards: the late subscriber's first update must be about it.
            marker = await asyncio.to_thread(
                gql,
                gateway,
                operation("Redeem"),
                redeem_variables(sandbox, gateway, failing=True),
                token=gateway.token(user),
            )
            first_late = await next_update(late, late_op)

    assert (settled["id"], settled["status"]) == (answered["redemption"]["id"], "FULFILLED")
    assert (first_late["id"], first_late["status"]) == (marker["data"]["redeem"]["redemption"]["id"], "PENDING")
