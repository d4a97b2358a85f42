"""The gateway process killed between reserving the points and placing the order, for real, with each seller.

`giftgraph serve` (GIFTGRAPH_PROVIDER=tremendous or tango) runs as a child process against the seller's fake,
which holds the order request at its door. SIGKILL lands while it waits: the points are reserved and the
redemption PENDING in the ledger, and the seller never saw the order. The next process's order reconciler
finds the reference unknown at the seller, orders once, and settles: one order, one debit.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from giftgraph.auth import issue_token
from giftgraph.settings import Settings
from providers.composite import order_reference
from resolvers.ids import encode_global_id
from resolvers.redeem import provider_idempotency_key
from tests import fake_tango
from tests.fake_tremendous import running_fake_tremendous
from tests.processes import GatewayProcess
from tests.support import TEST_SECRET, eventually, operation

pytestmark = pytest.mark.slow

REDEEM = operation("Redeem")
START = 5_000
# One call (all its attempts) may take this long. The saga's order call is held at the seller's door for
# longer, so it is still waiting when the test kills the process; the next process's reconciler looks at the
# PENDING redemption 2 x this after the reserve. Seconds, not one: the test must see the held call and kill
# the process before the call gives up, however loaded the machine.
CALL_BUDGET = 4


@dataclass(frozen=True)
class Seller:
    """What the test needs of one seller and its fake: how to run it, configure the gateway, and read it."""

    name: str
    run: Callable[[], AbstractContextManager[Any]]
    env: Callable[[Any], dict[str, str]]
    reward_id: str
    face_value: str
    cost: int
    reference_field: str  # the order's field carrying our reference

    def orders(self, fake: Any, reference: str) -> int:
        return sum(1 for order in list(fake.state.orders.values()) if order.get(self.reference_field) == reference)


SELLERS = [
    Seller(
        name="tremendous",
        run=running_fake_tremendous,
        env=lambda fake: {
            "GIFTGRAPH_PROVIDER": "tremendous",
            "GIFTGRAPH_TREMENDOUS_BASE_URL": fake.url,
            "GIFTGRAPH_TREMENDOUS_API_KEY": fake.api_key,
            "GIFTGRAPH_TREMENDOUS_RATE_LIMIT_PER_SECOND": "0",
        },
        reward_id="AMZN-US",
        face_value="25",
        cost=2_500,
        reference_field="external_id",
    ),
    Seller(
        name="tango",
        run=lambda: fake_tango.running_fake_tango(rate_limit=None),
        env=lambda fake: {
            "GIFTGRAPH_PROVIDER": "tango",
            "GIFTGRAPH_TANGO_BASE_URL": fake.url,
            "GIFTGRAPH_TANGO_PLATFORM_NAME": fake_tango.PLATFORM_NAME,
            "GIFTGRAPH_TANGO_PLATFORM_KEY": fake_tango.PLATFORM_KEY,
            "GIFTGRAPH_TANGO_ACCOUNT_IDENTIFIER": fake_tango.ACCOUNT,
            "GIFTGRAPH_TANGO_CUSTOMER_IDENTIFIER": fake_tango.CUSTOMER,
            "GIFTGRAPH_TANGO_RATE_LIMIT_PER_SECOND": "0",
        },
        reward_id="U000001",
        face_value="10",
        cost=1_000,
        reference_field="externalRefID",
    ),
]


@pytest.fixture(params=SELLERS, ids=[seller.name for seller in SELLERS])
def seller(request: pytest.FixtureRequest) -> Seller:
    return request.param


@pytest.fixture
def fake(seller: Seller) -> Iterator[Any]:
    with seller.run() as running:
        yield running


@pytest.fixture
def gateway(tmp_path: Path, seller: Seller, fake: Any) -> Iterator[GatewayProcess]:
    settings = seller.env(fake) | {
        "GIFTGRAPH_LEDGER_STARTING_BALANCE": str(START),
        "GIFTGRAPH_PROVIDER_READ_TIMEOUT": "30",
        "GIFTGRAPH_PROVIDER_CALL_BUDGET_SECONDS": str(CALL_BUDGET),
        "GIFTGRAPH_PROVIDER_BREAKER_FAILURE_THRESHOLD": "1000",
        "GIFTGRAPH_RECONCILE_INTERVAL_SECONDS": "0.2",
        "GIFTGRAPH_RECONCILE_MAX_BACKOFF_SECONDS": "1",
        "GIFTGRAPH_IDEMPOTENCY_LEASE_SECONDS": "1",  # the dead process's clientMutationId is taken over soon
    }
    running = GatewayProcess(tmp_path / "gateway", settings, ready_path="/healthz")
    try:
        yield running
    finally:
        running.stop()


def post_redeem(gateway: GatewayProcess, seller: Seller, user_id: str, cmid: str) -> dict[str, Any]:
    variables = {
        "input": {
            "clientMutationId": cmid,
            "rewardId": encode_global_id("Reward", seller.reward_id),
            "faceValue": seller.face_value,
        }
    }
    response = httpx.post(
        f"{gateway.url}/graphql",
        json={"query": REDEEM, "variables": variables},
        headers={"Authorization": f"Bearer {issue_token(Settings(jwt_secret=TEST_SECRET), user_id)}"},
        timeout=60,
    )
    return response.json()["data"]["redeem"]


def test_given_the_gateway_killed_between_reserving_and_ordering_then_the_next_one_orders_exactly_once(
    gateway: GatewayProcess, seller: Seller, fake: Any
) -> None:
    user_id, cmid = f"crash-{seller.name}", "crash-1"
    reference = order_reference(provider_idempotency_key(user_id, cmid))
    status = "SELECT status FROM ledger_redemptions WHERE order_reference = ?"
    gateway.start()
    fake.state.hold_orders = 120.0  # far longer than the call budget: only the kill ends the wait

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    request = pool.submit(post_redeem, gateway, seller, user_id, cmid)
    pool.shutdown(wait=False)
    # Reserved, and the order at the seller's door (or the redeem answered early: the test says what it got).
    eventually(lambda: fake.state.held == 1 or request.done(), timeout=60)
    assert not request.done(), request.result()
    gateway.kill()
    with pytest.raises(httpx.TransportError):
        request.result(timeout=30)
    eventually(lambda: fake.state.held == 0, timeout=30)  # the seller saw the caller go: no order
    assert seller.orders(fake, reference) == 0
    assert gateway.query(status, reference) == "PENDING"
    assert gateway.query("SELECT available FROM ledger_accounts WHERE user_id = ?", user_id) == START - seller.cost

    fake.state.hold_orders = 0
    gateway.start()
    eventually(lambda: gateway.query(status, reference) == "FULFILLED", timeout=90)
    retried = post_redeem(gateway, seller, user_id, cmid)

    assert retried["userErrors"] == [] and retried["redemption"]["status"] == "FULFILLED"
    assert seller.orders(fake, reference) == 1
    assert gateway.query("SELECT count(*) FROM ledger_transactions WHERE user_id = ? AND kind = 'REDEEM'", user_id) == 1
    assert gateway.query("SELECT count(*) FROM ledger_transactions WHERE user_id = ? AND kind = 'REFUND'", user_id) == 0
    assert gateway.query("SELECT available FROM ledger_accounts WHERE user_id = ?", user_id) == START - seller.cost
