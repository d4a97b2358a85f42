"""The sandbox's webhook sender against a real receiver on loopback that verifies every Standard Webhooks
signature: retries keep the id, a final answer stops them, and the service's events arrive signed.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import BaseModel
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from providers.base import RewardAvailability
from providers.rest.contract import RedemptionSettledData
from providers.sandbox import failing_reward_ids
from providers.sandbox.credentials import load_or_create, new_webhook_secret
from providers.sandbox.webhook_sender import Delivery, WebhookRetry, WebhookSender
from tests.processes import free_port
from tests.sandbox_service import CREDENTIALS_FILE, SandboxService, running_sandbox_service

# A 5 s timeout: a receiver slowed by a loaded machine must not cost an extra attempt (counts are asserted).
FAST = WebhookRetry(max_attempts=3, base_delay=0.01, max_delay=0.05, timeout=5.0, drain_seconds=0.5)


class Ping(BaseModel):
    n: int


@dataclass
class Received:
    id: str
    timestamp: str
    body: bytes
    verified: bool
    payload: Any


@dataclass
class Receiver:
    """A webhook endpoint that verifies signatures and answers the scripted statuses, then 200."""

    secret: str
    statuses: list[int] = field(default_factory=list)
    delay_first: float = 0.0
    hold_first_until: threading.Event | None = None  # the first request waits for the test to set it
    received: list[Received] = field(default_factory=list)
    url: str = ""

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            payload, verified = Webhook(self.secret).verify(body, dict(request.headers)), True
        except WebhookVerificationError:
            payload, verified = None, False
        first = not self.received
        headers = request.headers
        self.received.append(
            Received(headers.get("webhook-id", ""), headers.get("webhook-timestamp", ""), body, verified, payload)
        )
        if first and self.delay_first:
            await asyncio.sleep(self.delay_first)
        if first and self.hold_first_until is not None:
            await asyncio.to_thread(self.hold_first_until.wait, 30)
        status = self.statuses.pop(0) if self.statuses else 200
        return Response(status_code=status, headers={"Retry-After": "0"} if status == 429 else None)

    def of_type(self, event_type: str) -> list[Received]:
        return [r for r in self.received if r.payload and r.payload["type"] == event_type]


@contextmanager
def receiving(receiver: Receiver) -> Iterator[Receiver]:
    app = Starlette(routes=[Route("/webhooks/sandbox", receiver.hook, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off", timeout_graceful_shutdown=1)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.01)
    receiver.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/webhooks/sandbox"
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(timeout=10)


async def settled(delivery: Delivery, timeout: float = 5.0) -> Delivery:
    deadline = time.monotonic() + timeout
    while not (delivery.delivered or delivery.gave_up):
        assert time.monotonic() < deadline, f"delivery unsettled: {delivery}"
        await asyncio.sleep(0.01)
    return delivery


# The sender on its own


@pytest.mark.anyio
async def test_given_a_receiver_failing_once_when_sending_then_retried_with_the_same_id_and_a_valid_signature() -> None:
    secret = new_webhook_secret()
    with receiving(Receiver(secret, statuses=[500])) as receiver:
        sender = WebhookSender(url=receiver.url, secret=secret, retry=FAST)
        await sender.start()
        try:
            event_id = sender.send("points.earned", Ping(n=1))
            delivery = await settled(sender.deliveries[event_id])
        finally:
            await sender.aclose()

    assert (delivery.delivered, delivery.attempts, delivery.last_status) == (True, 2, 200)
    assert [r.id for r in receiver.received] == [event_id, event_id]
    assert all(r.verified for r in receiver.received)
    assert receiver.received[0].body == receiver.received[1].body  # one body, signed per attempt
    assert receiver.received[1].payload["type"] == "points.earned"
    assert receiver.received[1].payload["data"] == {"n": 1} and receiver.received[1].payload["timestamp"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("statuses", "attempts", "delivered"),
    [
        ([400], 1, False),
        ([401], 1, False),
        ([429, 202], 2, True),
        ([408, 503, 200], 3, True),
        ([500, 502, 504], 3, False),
    ],
)
async def test_given_receiver_answers_then_only_temporary_failures_are_retried_within_the_attempt_budget(
    statuses: list[int], attempts: int, delivered: bool
) -> None:
    secret = new_webhook_secret()
    with receiving(Receiver(secret, statuses=list(statuses))) as receiver:
        sender = WebhookSender(url=receiver.url, secret=secret, retry=FAST)
        await sender.start()
        try:
            delivery = await settled(sender.deliveries[sender.send("catalog.item_changed", Ping(n=2))])
        finally:
            await sender.aclose()

    assert (delivery.attempts, delivery.delivered, delivery.gave_up) == (attempts, delivered, not delivered)
    assert len(receiver.received) == attempts and all(r.verified for r in receiver.received)


@pytest.mark.anyio
async def test_given_nobody_listening_when_sending_then_connection_errors_are_retried_then_given_up() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}/webhooks/sandbox"
    sender = WebhookSender(url=nowhere, secret=new_webhook_secret(), retry=FAST)
    await sender.start()
    try:
        delivery = await settled(sender.deliveries[sender.send("points.earned", Ping(n=3))])
    finally:
        await sender.aclose()

    assert (delivery.attempts, delivery.gave_up, delivery.last_status) == (FAST.max_attempts, True, None)


@pytest.mark.anyio
async def test_given_a_receiver_slower_than_the_timeout_then_the_attempt_times_out_and_is_retried() -> None:
    secret = new_webhook_secret()
    # The first answer comes six timeouts late; a loaded machine may time out a later attempt too, so
    # the budget leaves room for that: what counts is that a timed-out attempt is retried.
    retry = WebhookRetry(max_attempts=5, base_delay=0.01, max_delay=0.05, timeout=0.5, drain_seconds=0.5)
    with receiving(Receiver(secret, delay_first=3.0)) as receiver:
        sender = WebhookSender(url=receiver.url, secret=secret, retry=retry)
        await sender.start()
        try:
            event_id = sender.send("points.earned", Ping(n=4))
            # send() only queues: the delivery runs in a task that has not had a turn yet.
            attempts_when_queued = sender.deliveries[event_id].attempts
            delivery = await settled(sender.deliveries[event_id], timeout=15.0)
        finally:
            await sender.aclose()

    assert attempts_when_queued == 0 and delivery.delivered
    assert delivery.attempts >= 2  # one timed out (the receiver was still holding it), then retried
    assert [r.id for r in receiver.received] == [event_id] * delivery.attempts


@pytest.mark.anyio
async def test_given_retries_pending_when_closing_then_they_are_cancelled_within_the_drain_time() -> None:
    secret = new_webhook_secret()
    slow = WebhookRetry(max_attempts=50, base_delay=5.0, max_delay=5.0, timeout=1.0, drain_seconds=0.2)
    with receiving(Receiver(secret, statuses=[500] * 50)) as receiver:
        sender = WebhookSender(url=receiver.url, secret=secret, retry=slow)
        await sender.start()
        event_id = sender.send("points.earned", Ping(n=5))
        while not receiver.received:
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await sender.aclose()
        closing = time.monotonic() - started
        late = sender.send("points.earned", Ping(n=6))

    assert closing < 2.5 and sender.in_flight == 0  # not the 5 s a pending retry would wait
    assert not sender.deliveries[event_id].delivered
    assert sender.deliveries[late].gave_up and len(receiver.received) == 1


# The service's events


def _redeem(service: SandboxService, user: str, key: str, *, failing: bool) -> dict[str, Any]:
    failing_ids = failing_reward_ids(service.provider.catalog)
    reward = next(
        r
        for r in service.provider.catalog
        if r.availability is RewardAvailability.AVAILABLE and (r.id in failing_ids) == failing
    )
    body = {"user_id": user, "reward_id": reward.id, "face_value": str(reward.denomination.min_value), "points": 100}
    with service.client() as client:
        response = client.post("/v1/redemptions", json=body, headers={"Idempotency-Key": key})
    assert response.status_code == 201, response.text
    return response.json()["redemption"]


def _wait_for(receiver: Receiver, event_type: str, count: int = 1, timeout: float = 5.0) -> list[Received]:
    deadline = time.monotonic() + timeout
    while len(receiver.of_type(event_type)) < count:
        assert time.monotonic() < deadline, f"no {event_type}: {[r.payload for r in receiver.received]}"
        time.sleep(0.01)
    return receiver.of_type(event_type)


def test_given_the_service_with_a_webhook_url_then_grants_settlements_and_catalog_changes_arrive_signed(
    tmp_path: Path,
) -> None:
    secret = load_or_create(tmp_path / CREDENTIALS_FILE).webhook_secret  # the file the service will read
    with receiving(Receiver(secret)) as receiver:
        with running_sandbox_service(tmp_path, webhook_url=receiver.url, webhook_retry=FAST) as service:
            granted = service.grant("hooked", 300)
            fulfilled = _redeem(service, "hooked", "hook-1", failing=False)
            failed = _redeem(service, "hooked", "hook-2", failing=True)
            reward_id = service.provider.catalog[0].id
            service.set_availability(reward_id, "OUT_OF_STOCK")

            earned = _wait_for(receiver, "points.earned")[0]
            done = _wait_for(receiver, "redemption.fulfilled")[0]
            refunded = _wait_for(receiver, "redemption.failed")[0]
            changed = _wait_for(receiver, "catalog.item_changed")[0]

    assert all(r.verified for r in receiver.received)
    assert len({r.id for r in receiver.received}) == len(receiver.received) == 4
    assert earned.payload["data"]["transaction_id"] == granted["transaction"]["id"]
    assert earned.payload["data"]["points"] == 300 and earned.payload["data"]["balance"]["available"] == 10_300
    done_data = RedemptionSettledData.model_validate(done.payload["data"])
    assert done_data.redemption.id == fulfilled["id"] and done_data.redemption.status == "FULFILLED"
    assert done_data.redemption.gift_card is None  # never a card in a webhook
    assert b"claim" not in done.body and b"pin" not in done.body
    failed_data = RedemptionSettledData.model_validate(refunded.payload["data"])
    assert failed_data.redemption.id == failed["id"] and failed_data.redemption.status == "FAILED"
    assert failed_data.balance.available == 10_300 - 100  # refunded
    assert changed.payload["data"] == {"reward_id": reward_id, "availability": "OUT_OF_STOCK"}


def test_given_a_stalled_receiver_when_granting_then_the_api_answers_without_waiting_for_the_webhook(
    tmp_path: Path,
) -> None:
    release = threading.Event()
    secret = load_or_create(tmp_path / CREDENTIALS_FILE).webhook_secret  # the file the service will read
    with receiving(Receiver(secret, hold_first_until=release)) as receiver:
        # The sender would wait 30 s for the receiver: longer than the admin client's 10 s, so a grant
        # that waited for its webhook would fail with a timeout here.
        retry = WebhookRetry(max_attempts=1, timeout=30.0, drain_seconds=0.1)
        with running_sandbox_service(tmp_path, webhook_url=receiver.url, webhook_retry=retry) as service:
            try:
                granted = service.grant("patient", 10)  # answered while the receiver holds the webhook
                _wait_for_any(receiver)
            finally:
                release.set()

    assert granted["balance"]["available"] == 10_010
    assert [r.payload["type"] for r in receiver.received] == ["points.earned"]


def _wait_for_any(receiver: Receiver, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not receiver.received:
        assert time.monotonic() < deadline
        time.sleep(0.01)
