"""The README's two-terminal setup, as real processes: `giftgraph sandbox serve` and `giftgraph serve`.

Both run from one data folder in development, so the gateway finds the sandbox's generated
credentials (API key and webhook secret) with no configuration. `giftgraph sandbox grant`
credits points at the sandbox, whose signed webhook reaches the gateway, whose subscriber
sees the new balance; a redemption goes through the gateway over REST.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest

from giftgraph.auth import issue_token
from giftgraph.settings import Settings
from tests.processes import free_port, stop_process, wait_until_answering
from tests.support import TEST_SECRET, operation, ws_connect

pytestmark = pytest.mark.slow

STARTING_BALANCE = 10_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    data_dir = tmp_path_factory.mktemp("two-processes")
    sandbox_port, gateway_port = free_port(), free_port()
    sandbox_url, gateway_url = f"http://127.0.0.1:{sandbox_port}", f"http://127.0.0.1:{gateway_port}"
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIFTGRAPH_")} | {
        "GIFTGRAPH_DATA_DIR": str(data_dir),
        "GIFTGRAPH_SANDBOX_URL": sandbox_url,
        "GIFTGRAPH_SANDBOX_FULFILMENT_DELAY": "0.3",
    }
    sandbox_env = env | {"GIFTGRAPH_SANDBOX_WEBHOOK_URL": f"{gateway_url}/webhooks/sandbox"}
    gateway_env = env | {
        "GIFTGRAPH_PORT": str(gateway_port),
        "GIFTGRAPH_PROVIDER": "rest",
        "GIFTGRAPH_PROVIDER_BASE_URL": sandbox_url,
        "GIFTGRAPH_JWT_SECRET": TEST_SECRET,
    }
    processes: list[subprocess.Popen[str]] = []
    try:
        for name, args, process_env, ready in (
            ("sandbox", ["sandbox", "serve"], sandbox_env, f"{sandbox_url}/openapi.json"),
            ("gateway", ["serve"], gateway_env, f"{gateway_url}/readyz"),
        ):
            log = data_dir / f"{name}.log"  # a file, not a pipe: a full pipe would stall the process
            with log.open("w") as output:
                process = subprocess.Popen(
                    [sys.executable, "-m", "giftgraph", *args],
                    env=process_env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            processes.append(process)
            wait_until_answering(ready, process, timeout=40, output=log.read_text)
        yield SimpleNamespace(
            env=env,
            sandbox_url=sandbox_url,
            gateway_url=gateway_url,
            ws_url=f"ws://127.0.0.1:{gateway_port}/graphql",
        )
    finally:
        for process in reversed(processes):
            stop_process(process)


def bearer(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer {issue_token(Settings(jwt_secret=TEST_SECRET), user)}"}


@pytest.mark.anyio
async def test_given_both_processes_when_points_are_granted_from_the_cli_then_a_gateway_subscriber_sees_them(
    stack: SimpleNamespace,
) -> None:
    user = f"e2e-{time.monotonic_ns()}"
    async with ws_connect(stack, init_payload=bearer(user)) as ws:
        assert (await ws.receive())["type"] == "connection_ack"
        op = await ws.subscribe(operation("BalanceChanged"))
        first = await ws.receive()
        assert first["payload"]["data"]["balanceChanged"]["available"] == STARTING_BALANCE

        granted = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "giftgraph", "sandbox", "grant", user, "750"],
            env=stack.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert granted.returncode == 0, granted.stdout + granted.stderr
        seen = await ws.receive(timeout=20)

    assert (seen["id"], seen["type"]) == (op, "next")
    assert seen["payload"]["data"]["balanceChanged"]["available"] == STARTING_BALANCE + 750


def test_given_both_processes_when_a_reward_is_redeemed_then_the_gateway_answers_from_the_sandbox_ledger(
    stack: SimpleNamespace,
) -> None:
    user = f"e2e-redeem-{time.monotonic_ns()}"
    headers = {"Authorization": bearer(user)["authorization"]}
    catalog = httpx.post(
        f"{stack.gateway_url}/graphql",
        json={
            "query": "{ catalog(first: 20) { edges { node { id availability denomination { minValue { amount } } pointCost } } } }"
        },
        timeout=30,
    ).json()["data"]["catalog"]["edges"]
    reward = next(edge["node"] for edge in catalog if edge["node"]["availability"] == "AVAILABLE")
    variables = {
        "input": {
            "clientMutationId": "e2e-1",
            "rewardId": reward["id"],
            "faceValue": reward["denomination"]["minValue"]["amount"],
        }
    }

    payloads = [
        httpx.post(
            f"{stack.gateway_url}/graphql",
            json={"query": operation("Redeem"), "variables": variables},
            headers=headers,
            timeout=30,
        ).json()["data"]["redeem"]
        for _ in range(2)
    ]

    assert [p["userErrors"] for p in payloads] == [[], []]
    assert payloads[0]["redemption"]["id"] == payloads[1]["redemption"]["id"]  # the retry replayed
    assert payloads[1]["balance"]["available"] == STARTING_BALANCE - reward["pointCost"]
