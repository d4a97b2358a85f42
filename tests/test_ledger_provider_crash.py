"""The gateway process killed between reserving the points and placing the order, for real.

`giftgraph serve` (GIFTGRAPH_PROVIDER=tremendous) runs as a child process against the fake Tremendous,
which holds the order request at its door. SIGKILL lands while it waits: the points are reserved and
the redemption PENDING in the ledger, and Tremendous never saw the order. The next process's order
reconciler finds the reference unknown at Tremendous, orders once, and settles: one order, one debit.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from giftgraph.auth import issue_token
from giftgraph.settings import Settings
from providers.composite import order_reference
from resolvers.ids import encode_global_id
from resolvers.redeem import provider_idempotency_key
from tests.fake_tremendous import FakeTremendous, running_fake_tremendous
from tests.processes import GatewayProcess
from tests.support import TEST_SECRET, eventually, operation

pytestmark = pytest.mark.slow

REDEEM = operation("Redeem")
START = 5_000


def gateway_settings(fake: FakeTremendous) -> dict[str, str]:
    return {
        "GIFTGRAPH_PROVIDER": "tremendous",
        "GIFTGRAPH_TREMENDOUS_BASE_URL": fake.url,
        "GIFTGRAPH_TREMENDOUS_API_KEY": fake.api_key,
        "GIFTGRAPH_TREMENDOUS_RATE_LIMIT_PER_SECOND": "0",
        "GIFTGRAPH_LEDGER_STARTING_BALANCE": str(START),
        "GIFTGRAPH_PROVIDER_READ_TIMEOUT": "30",
        "GIFTGRAPH_PROVIDER_CALL_BUDGET_SECONDS": "1",  # the reconciler looks at a PENDING one after 2 s
        "GIFTGRAPH_RECONCILE_INTERVAL_SECONDS": "0.2",
        "GIFTGRAPH_IDEMPOTENCY_LEASE_SECONDS": "1",  # the dead process's clientMutationId is taken over soon
    }


@pytest.fixture
def fake() -> Iterator[FakeTremendous]:
    with running_fake_tremendous() as running:
        yield running


@pytest.fixture
def gateway(tmp_path: Path, fake: FakeTremendous) -> Iterator[GatewayProcess]:
    running = GatewayProcess(tmp_path / "gateway", gateway_settings(fake), ready_path="/healthz")
    try:
        yield running
    finally:
        running.stop()


def post_redeem(gateway: GatewayProcess, user_id: str, cmid: str) -> dict[str, Any]:
    variables = {
        "input": {"clientMutationId": cmid, "rewardId": encode_global_id("Reward", "AMZN-US"), "faceValue": "25"}
    }
    response = httpx.post(
        f"{gateway.url}/graphql",
        json={"query": REDEEM, "variables": variables},
        headers={"Authorization": f"Bearer {issue_token(Settings(jwt_secret=TEST_SECRET), user_id)}"},
        timeout=60,
    )
    return response.json()["data"]["redeem"]


def test_given_the_gateway_killed_between_reserving_and_ordering_then_the_next_one_orders_exactly_once(
    gateway: GatewayProcess, fake: FakeTremendous
) -> None:
    user_id, cmid = "crash-ledger", "crash-1"
    reference = order_reference(provider_idempotency_key(user_id, cmid))
    gateway.start()
    fake.state.hold_orders = 30.0

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    request = pool.submit(post_redeem, gateway, user_id, cmid)
    pool.shutdown(wait=False)
    eventually(lambda: fake.state.held == 1, timeout=20)  # reserved, and the order is at Tremendous' door
    gateway.kill()
    with pytest.raises(httpx.TransportError):
        request.result(timeout=10)
    eventually(lambda: fake.state.held == 0, timeout=10)  # Tremendous saw the caller go: no order
    assert sum(1 for order in fake.state.orders.values() if order.get("external_id") == reference) == 0
    assert gateway.query("SELECT status FROM ledger_redemptions WHERE order_reference = ?", reference) == "PENDING"
    assert gateway.query("SELECT available FROM ledger_accounts WHERE user_id = ?", user_id) == START - 2_500

    fake.state.hold_orders = 0
    gateway.start()
    eventually(
        lambda: (
            gateway.query("SELECT status FROM ledger_redemptions WHERE order_reference = ?", reference) == "FULFILLED"
        ),
        timeout=20,
    )
    retried = post_redeem(gateway, user_id, cmid)

    assert retried["userErrors"] == [] and retried["redemption"]["status"] == "FULFILLED"
    assert sum(1 for order in fake.state.orders.values() if order.get("external_id") == reference) == 1
    assert gateway.query("SELECT count(*) FROM ledger_transactions WHERE user_id = ? AND kind = 'REDEEM'", user_id) == 1
    assert gateway.query("SELECT available FROM ledger_accounts WHERE user_id = ?", user_id) == START - 2_500
