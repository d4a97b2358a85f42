"""The order saga's edge paths with Tango Card, through real HTTP: a 402 refunds and stops the next redemption
before it reserves, the funding balance is read at most once per TTL, a clientMutationId reused for another
reward is refused before Tango (which would replay the first order), and a card no key can read is a typed,
temporary error that never reaches the logs.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy

from providers.composite import order_reference
from providers.ledger import CardCipher
from providers.tango import SIGNATURE_HEADER, sign
from resolvers.redeem import provider_idempotency_key
from tests.fake_tango import (
    ACCOUNT,
    CARD_CODE,
    CARD_PIN,
    CARD_URL,
    WEBHOOK_SECRET,
    RunningFakeTango,
    delivery_event,
    running_fake_tango,
)
from tests.support import LiveServer, codes, gql, live_server, operation, run_on_server_loop
from tests.test_ledger_provider_tango_api import START, gateway_settings, orders_for, redeem, user
from tests.test_saga_edges import history, points

HISTORY = operation("History")
REDEMPTION = operation("Redemption")
VIEWER_BALANCE = operation("ViewerBalance")
COST = 1_000  # points for the 10 USD Coffee Co card
FUNDING = ("GET", f"/accounts/{ACCOUNT}")


@pytest.fixture
def fake() -> Iterator[RunningFakeTango]:
    with running_fake_tango(rate_limit=None) as running:
        yield running


@pytest.fixture
def gateway(tmp_path: Path, fake: RunningFakeTango) -> Iterator[LiveServer]:
    with live_server(gateway_settings(tmp_path, fake, funding_balance_ttl_seconds=60)) as running:
        yield running


def posted_orders(fake: RunningFakeTango) -> int:
    return list(fake.state.api_requests).count(("POST", "/orders"))


def warm(gateway: LiveServer) -> None:
    """Read the catalog and the funding balance once (both cached for longer than the test)."""
    assert gql(gateway, "{ catalog(first: 1) { totalCount } }")["data"]["catalog"]["totalCount"] > 0
    assert httpx.get(f"{gateway.base_url}/readyz", timeout=10).status_code == 200


def test_given_a_stale_funding_balance_when_tango_answers_402_then_failed_refunded_and_the_next_one_refused(
    gateway: LiveServer, fake: RunningFakeTango
) -> None:
    user_id = user()
    warm(gateway)  # the gateway now trusts 1,000 USD for a minute
    fake.state.balance = Decimal("5.00")  # drained elsewhere: less than the 10 USD card

    refused = redeem(gateway, user_id, "drained")

    assert refused["userErrors"] == []
    assert refused["redemption"]["status"] == "FAILED"
    assert refused["redemption"]["failureReason"] == "The provider cannot fund this reward right now"
    assert orders_for(fake, user_id, "drained") == 0 and posted_orders(fake) == 1
    assert history(gateway, user_id) == ["REFUND", "REDEEM", "EARN"]
    assert points(gateway, user_id) == (START, 0)

    # The 402 dropped the cached balance: the next redemption asks Tango and is refused before reserving.
    again = redeem(gateway, user_id, "drained-again")

    assert codes_of(again) == ["PROVIDER_UNAVAILABLE"] and again["redemption"] is None
    assert posted_orders(fake) == 1
    assert history(gateway, user_id) == ["REFUND", "REDEEM", "EARN"]
    assert points(gateway, user_id) == (START, 0)


def test_given_readyz_and_metrics_scraped_often_then_tango_is_asked_for_the_funding_balance_at_most_once(
    gateway: LiveServer, fake: RunningFakeTango
) -> None:
    before = list(fake.state.api_requests).count(FUNDING)

    ready = [httpx.get(f"{gateway.base_url}/readyz", timeout=10) for _ in range(10)]
    scraped = [httpx.get(f"{gateway.base_url}/metrics", timeout=10).text for _ in range(10)]

    assert all(answer.status_code == 200 for answer in ready)
    assert {Decimal(answer.json()["checks"]["funding"]["available"]) for answer in ready} == {Decimal(1000)}
    assert all('giftgraph_provider_funding_balance{provider="tango",currency="USD"}' in text for text in scraped)
    assert list(fake.state.api_requests).count(FUNDING) - before <= 1  # Tango allows 1 request/s in all


def test_given_a_client_mutation_id_reused_for_another_reward_after_the_gateway_forgot_it_then_refused_before_tango(
    gateway: LiveServer, fake: RunningFakeTango
) -> None:
    user_id = user()
    first = redeem(gateway, user_id, "same")
    expire_idempotency_key(gateway, user_id, "same")  # as 24 h later: only the ledger still knows the key
    placed = posted_orders(fake)

    other = redeem(gateway, user_id, "same", reward="U000002", face_value="20")

    assert first["userErrors"] == [] and first["redemption"]["status"] == "FULFILLED"
    assert codes_of(other) == ["IDEMPOTENCY_KEY_REUSED"] and other["redemption"] is None
    assert posted_orders(fake) == placed  # Tango would have replayed the first order as if it were this one
    assert len(fake.state.orders) == 1
    assert history(gateway, user_id) == ["REDEEM", "EARN"]
    assert points(gateway, user_id) == (START - COST, 0)


def test_given_a_card_under_a_removed_key_then_reading_it_is_provider_unavailable_and_no_card_is_logged(
    tmp_path: Path, fake: RunningFakeTango, debug_log: io.StringIO
) -> None:
    user_id = user()
    removed, current = CardCipher.generate_key(), CardCipher.generate_key()
    with live_server(gateway_settings(tmp_path, fake, card_encryption_keys=[removed])) as before:
        first = redeem(before, user_id, "card")
    assert first["redemption"]["giftCard"]["code"] == CARD_CODE

    settings = gateway_settings(tmp_path, fake, card_encryption_keys=[current], tango_webhook_secret=WEBHOOK_SECRET)
    with live_server(settings) as gateway:
        read = gql(gateway, REDEMPTION, {"id": first["redemption"]["id"]}, token=gateway.token(user_id))
        # A late delivery event for that order: found by its reference, which never decrypts the card.
        delivered = deliver(gateway, fake, order_reference(provider_idempotency_key(user_id, "card")))
        balance = points(gateway, user_id)

    assert codes(read) == ["PROVIDER_UNAVAILABLE"]
    assert read["data"]["node"] is None
    assert (delivered.status_code, delivered.json()) == (200, {"status": "processed"})
    assert balance == (START - COST, 0)
    logged = debug_log.getvalue()
    assert "gift card unreadable" in logged  # the operator is told, without the card
    assert all(secret not in logged for secret in (CARD_CODE, CARD_PIN, CARD_URL))


def codes_of(payload: dict[str, Any]) -> list[str]:
    return [error["code"] for error in payload["userErrors"]]


def expire_idempotency_key(gateway: LiveServer, user_id: str, client_mutation_id: str) -> None:
    """Move the gateway's stored answer for the key past its TTL, as time would."""

    async def expire() -> None:
        async with gateway.app.state.engine.begin() as conn:
            await conn.execute(
                sqlalchemy.text("UPDATE idempotency_keys SET expires_at = 0 WHERE user_id = :user AND key = :key"),
                {"user": user_id, "key": client_mutation_id},
            )

    run_on_server_loop(gateway, expire())


def deliver(gateway: LiveServer, fake: RunningFakeTango, reference: str) -> httpx.Response:
    """A signed Tango delivery event for the order under `reference`."""
    raw = delivery_event(reference, fake.state.by_ref[reference])
    return httpx.post(
        f"{gateway.base_url}/webhooks/tango",
        content=raw,
        headers={SIGNATURE_HEADER: sign(WEBHOOK_SECRET, raw)},
        timeout=10,
    )
