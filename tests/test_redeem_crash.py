"""Exactly once across a crash: the gateway process is killed mid-redemption and started again.

The gateway runs as a real process (`giftgraph serve`, provider=rest) against the sandbox REST
service on loopback. It is killed with SIGKILL while its redeem call is in flight, before or
after the provider committed; the next process's reconciler finds the key by its lapsed lease
and asks the provider again with the same idempotency key. For each clientMutationId the
provider ends with exactly one redemption and exactly one debit.
"""

from __future__ import annotations

import concurrent.futures
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from giftgraph.auth import issue_token
from giftgraph.settings import Settings
from resolvers.ids import encode_global_id
from resolvers.redeem import provider_idempotency_key
from tests.processes import GatewayProcess
from tests.sandbox_service import SandboxService, running_sandbox_service
from tests.support import TEST_SECRET, eventually, operation

pytestmark = pytest.mark.slow

REDEEM = operation("Redeem")
LEASE = 1.0  # the gateway's idempotency lease: how long a dead process's key stays held


def gateway_settings(sandbox: SandboxService) -> dict[str, str]:
    credentials = sandbox.credentials
    return {
        "GIFTGRAPH_PROVIDER": "rest",
        "GIFTGRAPH_PROVIDER_BASE_URL": sandbox.url,
        "GIFTGRAPH_PROVIDER_API_KEY": credentials.api_key,
        "GIFTGRAPH_PROVIDER_API_SECRET": credentials.api_secret,
        "GIFTGRAPH_PROVIDER_READ_TIMEOUT": "30",  # the call is still waiting when the process dies
        "GIFTGRAPH_PROVIDER_CALL_BUDGET_SECONDS": "30",
        "GIFTGRAPH_IDEMPOTENCY_LEASE_SECONDS": str(LEASE),
        "GIFTGRAPH_RECONCILE_INTERVAL_SECONDS": "0.2",
        "GIFTGRAPH_OPERATION_TIMEOUT_SECONDS": "60",
    }


def recorded_requests(gateway: GatewayProcess) -> int:
    return gateway.query("SELECT count(*) FROM idempotency_keys WHERE state = 'in_progress' AND request IS NOT NULL")


def unsettled_keys(gateway: GatewayProcess) -> int:
    return gateway.query("SELECT count(*) FROM idempotency_keys WHERE state = 'in_progress'")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxService]:
    with running_sandbox_service(tmp_path / "sandbox") as service:
        yield service


@pytest.fixture
def gateway(tmp_path: Path, sandbox: SandboxService) -> Iterator[GatewayProcess]:
    running = GatewayProcess(tmp_path / "gateway", gateway_settings(sandbox))
    try:
        yield running
    finally:
        running.stop()


def token(user_id: str) -> str:
    return issue_token(Settings(jwt_secret=TEST_SECRET), user_id)


def redeem_variables(sandbox: SandboxService, cmid: str) -> dict[str, Any]:
    reward = next(r for r in sandbox.provider.catalog if r.availability.value == "AVAILABLE")
    face_value = reward.denomination.min_value
    return {
        "input": {
            "clientMutationId": cmid,
            "rewardId": encode_global_id("Reward", reward.id),
            "faceValue": str(face_value),
        }
    }


def post_redeem(
    gateway: GatewayProcess, user_id: str, variables: dict[str, Any], *, timeout: float = 60
) -> dict[str, Any]:
    response = httpx.post(
        f"{gateway.url}/graphql",
        json={"query": REDEEM, "variables": variables},
        headers={"Authorization": f"Bearer {token(user_id)}"},
        timeout=timeout,
    )
    return response.json()["data"]["redeem"]


def in_flight(gateway: GatewayProcess, user_id: str, variables: dict[str, Any]) -> concurrent.futures.Future[Any]:
    """Send the mutation from another thread; the future fails when the process dies under it."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    future = pool.submit(post_redeem, gateway, user_id, variables)
    pool.shutdown(wait=False)
    return future


@pytest.mark.parametrize(
    ("fault", "committed_before_kill"),
    [("hang_after_commit", True), ("latency", False)],
    ids=["killed-after-the-provider-committed", "killed-before-the-provider-committed"],
)
def test_given_the_gateway_killed_mid_redemption_when_it_restarts_then_exactly_one_redemption_and_one_debit(
    gateway: GatewayProcess, sandbox: SandboxService, fault: str, committed_before_kill: bool
) -> None:
    user, cmid = f"crash-{fault}", "crash-1"
    key = provider_idempotency_key(user, cmid)
    variables = redeem_variables(sandbox, cmid)
    gateway.start()
    sandbox.fault("redeem", fault, seconds=10.0)

    request = in_flight(gateway, user, variables)
    # Kill once the provider has the call: committed already, or still sleeping before it commits.
    if committed_before_kill:
        eventually(timeout=20, check=lambda: sandbox.stats()["redemptions_by_key"].get(key) == 1)
    else:
        # The gateway records the request just before sending it; the sandbox then sleeps 10 s first.
        eventually(timeout=20, check=lambda: recorded_requests(gateway) == 1)
        time.sleep(0.5)
        assert sandbox.stats()["redemptions_by_key"].get(key) is None
    gateway.kill()
    with pytest.raises(httpx.TransportError):
        request.result(timeout=10)
    assert unsettled_keys(gateway) == 1  # the dead process left its key, with the request recorded

    gateway.start()
    eventually(timeout=20, check=lambda: unsettled_keys(gateway) == 0)  # the new process's reconciler settled it
    retried = post_redeem(gateway, user, variables)

    assert retried["userErrors"] == []
    stats = sandbox.stats()
    assert stats["redemptions_by_key"] == {key: 1}
    assert stats["redeem_transactions"] == 1
    assert retried["balance"]["available"] == 10_000 - stats_points(sandbox, key)


def stats_points(sandbox: SandboxService, key: str) -> int:
    """The points the provider debited for the key, from its own ledger file."""
    path = sandbox.config.database_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as conn:
        (points,) = conn.execute("SELECT points FROM redemptions WHERE idempotency_key = ?", (key,)).fetchone()
    return points
