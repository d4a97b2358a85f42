"""The sandbox service's faults beyond the admin route's queue: set at start (GIFTGRAPH_SANDBOX_FAULTS, seeded),
asked for by one request (X-Sandbox-Fault), switched off (GIFTGRAPH_SANDBOX_FAULT_INJECTION), and a `reset`
that closes the connection before any response byte, which clients of either transport see as a connection
error, and after which the gateway still makes exactly one redemption and one debit.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from giftgraph.cli import main
from giftgraph.settings import ConfigurationError, load_settings
from providers.errors import ProviderConnectionError, ProviderError, ProviderMalformedResponse
from providers.http import ApiKeyAuth, HttpPolicy, ProviderHttpClient, transport_for
from providers.sandbox import failing_reward_ids
from providers.sandbox.credentials import SandboxCredentials
from providers.sandbox.service_faults import FAULT_HEADER, FaultPlan
from resolvers.ids import encode_global_id
from resolvers.redeem import provider_idempotency_key
from tests.processes import free_port, stop_process, wait_until_answering
from tests.sandbox_service import SandboxService, running_sandbox_service
from tests.support import live_server, make_settings, operation, post

REDEEM = operation("Redeem")
TRANSPORTS = ["httpx", "aiohttp"]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxService]:
    with running_sandbox_service(tmp_path_factory.mktemp("faults-start")) as service:
        yield service


@pytest.fixture(autouse=True)
def no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "sandbox" in request.fixturenames:
        request.getfixturevalue("sandbox").clear_faults()


def redeem_body(service: SandboxService, user_id: str) -> dict[str, Any]:
    failing = failing_reward_ids(service.provider.catalog)
    reward = next(r for r in service.provider.catalog if r.availability.value == "AVAILABLE" and r.id not in failing)
    return {"user_id": user_id, "reward_id": reward.id, "face_value": str(reward.denomination.min_value), "points": 100}


def redemptions_of(service: SandboxService, key: str) -> int:
    return service.stats()["redemptions_by_key"].get(key, 0)


def debits(service: SandboxService, user_id: str) -> int:
    """REDEEM transactions of the user in the sandbox's own ledger file."""
    path = service.config.database_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as conn:
        query = "SELECT count(*) FROM transactions WHERE user_id = ? AND kind = 'REDEEM'"
        return conn.execute(query, (user_id,)).fetchone()[0]


def raw_exchange(service: SandboxService, fault: str) -> bytes:
    """Every byte the service sends back for one GET /v1/rewards asking for `fault`, until it closes."""
    credentials = base64.b64encode(f"{service.credentials.api_key}:{service.credentials.api_secret}".encode())
    request = (
        "GET /v1/rewards?limit=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Basic {credentials.decode()}\r\n{FAULT_HEADER}: {fault}\r\nConnection: close\r\n\r\n"
    )
    received = b""
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        sock.sendall(request.encode())
        while chunk := sock.recv(65536):
            received += chunk
    return received


class FaultHeaderAuth(httpx.Auth):
    """The API key, plus X-Sandbox-Fault on every request (aiohttp's own resend of a GET included)."""

    def __init__(self, inner: httpx.Auth, fault: str) -> None:
        self.inner = inner
        self.fault = fault

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[FAULT_HEADER] = self.fault
        yield from self.inner.auth_flow(request)


async def error_of_one_attempt(service: SandboxService, transport: str, fault: str, *, redeem: bool) -> ProviderError:
    """The port error a provider client gets for one call (no retries) that suffers `fault`."""
    policy = HttpPolicy(rate_limit_per_second=0, retry_attempts=1, read_timeout=10)
    auth = FaultHeaderAuth(ApiKeyAuth(service.credentials.api_key, service.credentials.api_secret), fault)
    client = ProviderHttpClient(
        provider="sandbox", base_url=service.url, auth=auth, policy=policy, transport=transport_for(transport, policy)
    )
    async with client:
        with pytest.raises(ProviderError) as caught:
            if redeem:
                body = redeem_body(service, f"client-{uuid.uuid4().hex[:8]}")
                await client.post("/v1/redemptions", json=body, operation="redeem", idempotency_key=uuid.uuid4().hex)
            else:
                await client.get("/v1/rewards", params={"limit": 1}, operation="list_rewards")
    return caught.value


# reset: the connection closes before any response byte


def test_given_a_reset_then_the_connection_closes_before_any_response_byte_and_uvicorn_has_nothing_to_clean_up(
    sandbox: SandboxService, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    reset = raw_exchange(sandbox, "reset")
    cut = raw_exchange(sandbox, "cut_after_headers")
    normal = raw_exchange(sandbox, "none")

    assert reset == b""
    assert cut.startswith(b"HTTP/1.1 200 ") and cut.endswith(b"\r\n\r\n")  # headers, then nothing
    assert normal.startswith(b"HTTP/1.1 200 ") and normal.endswith(b"}")
    # The app returned after the server saw the connection go: no 500 attempted, no error logged for it.
    complaints = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert not [message for message in complaints if "without starting response" in message]


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_given_a_reset_then_a_client_of_either_transport_sees_a_connection_error(
    sandbox: SandboxService, transport: str
) -> None:
    read = await error_of_one_attempt(sandbox, transport, "reset", redeem=False)
    write = await error_of_one_attempt(sandbox, transport, "reset", redeem=True)

    assert type(read) is ProviderConnectionError and read.retryable
    assert type(write) is ProviderConnectionError and write.maybe_committed  # nothing says it was not processed


@pytest.mark.anyio
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_given_an_answer_lost_after_commit_then_a_connection_error_but_cut_after_headers_is_malformed(
    sandbox: SandboxService, transport: str
) -> None:
    lost = await error_of_one_attempt(sandbox, transport, "lost_after_commit", redeem=True)
    cut = await error_of_one_attempt(sandbox, transport, "cut_after_headers", redeem=False)

    assert type(lost) is ProviderConnectionError and lost.maybe_committed
    assert type(cut) is ProviderMalformedResponse


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_given_a_reset_redemption_then_the_gateway_retries_and_makes_one_redemption_and_one_debit(
    sandbox: SandboxService, tmp_path: Path, transport: str
) -> None:
    settings = make_settings(
        tmp_path,
        provider="rest",
        provider_base_url=sandbox.url,
        provider_api_key=sandbox.credentials.api_key,
        provider_api_secret=sandbox.credentials.api_secret,
        provider_transport=transport,
        provider_retry_attempts=4,
        provider_retry_base_delay=0.01,
        provider_retry_max_delay=0.05,
        provider_rate_limit_per_second=0,
        provider_read_timeout=5.0,
    )
    user_id, cmid = f"reset-{uuid.uuid4().hex[:10]}", "once"
    reward = redeem_body(sandbox, user_id)
    variables = {
        "input": {
            "clientMutationId": cmid,
            "rewardId": encode_global_id("Reward", reward["reward_id"]),
            "faceValue": reward["face_value"],
        }
    }
    with live_server(settings) as gateway:
        sandbox.fault("redeem", "reset")
        before = gateway.services.provider.http.stats
        response = post(gateway, REDEEM, variables, token=gateway.token(user_id))
        after = gateway.services.provider.http.stats

    payload = response.json()["data"]["redeem"]
    assert payload["userErrors"] == [] and payload["redemption"]["status"] in ("PENDING", "FULFILLED")
    assert sandbox.pending_faults() == []  # the reset was spent on the first attempt
    assert after.retries - before.retries == 1  # the reset was a connection error, retried with the same key
    assert redemptions_of(sandbox, provider_idempotency_key(user_id, cmid)) == 1
    assert debits(sandbox, user_id) == 1


# X-Sandbox-Fault: one request's fault


def test_given_a_fault_in_the_header_then_only_that_request_suffers_it_and_scheduled_faults_wait_their_turn(
    sandbox: SandboxService,
) -> None:
    sandbox.fault("list_rewards", "error_503")

    with sandbox.client() as client:
        asked = client.get("/v1/rewards", headers={FAULT_HEADER: "rate_limit_429; seconds=3"})
        shielded = client.get("/v1/rewards", headers={FAULT_HEADER: "none"})
        scheduled = client.get("/v1/rewards")
        after = client.get("/v1/rewards")

    assert asked.status_code == 429 and asked.headers["Retry-After"] == "3"
    assert shielded.status_code == 200
    assert scheduled.status_code == 503
    assert after.status_code == 200


@pytest.mark.parametrize(
    "value",
    ["explode", "reset; seconds", "hang; seconds=301", "hang; seconds=-1", "hang; seconds=nan", "latency; wait=1"],
)
def test_given_a_header_the_service_cannot_read_then_400_invalid_request_and_the_provider_is_not_called(
    sandbox: SandboxService, value: str
) -> None:
    before = sandbox.stats()["calls"].get("list_rewards", 0)

    with sandbox.client() as client:
        response = client.get("/v1/rewards", headers={FAULT_HEADER: value})

    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"
    assert FAULT_HEADER in response.json()["error"]["message"]
    assert sandbox.stats()["calls"].get("list_rewards", 0) == before


def test_given_the_header_twice_then_400(sandbox: SandboxService) -> None:
    with sandbox.client() as client:
        response = client.get("/v1/rewards", headers=[(FAULT_HEADER, "reset"), (FAULT_HEADER, "none")])

    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_request"


def test_given_fault_injection_off_then_the_header_is_ignored_and_nothing_can_be_scheduled(tmp_path: Path) -> None:
    with running_sandbox_service(tmp_path, fault_injection=False) as service, service.client() as client:
        asked = client.get("/v1/rewards", headers={FAULT_HEADER: "error_503"})
        schedule = client.post("/v1/sandbox/faults", json={"operation": "*", "fault": "reset"})
        after = client.get("/v1/rewards")

    assert asked.status_code == 200
    assert schedule.status_code == 400 and "fault injection is off" in schedule.json()["error"]["message"]
    assert after.status_code == 200


def test_given_fault_injection_off_then_start_time_faults_are_refused() -> None:
    with pytest.raises(ValueError, match="fault injection is off"):
        FaultPlan(rates={"*": {"reset": 0.1}}, enabled=False)
    with pytest.raises(ValueError, match="fault injection is off"):
        FaultPlan(failure_rate=0.1, enabled=False)
    FaultPlan(enabled=False)  # nothing asked: fine


# Start-time faults


def test_given_start_time_faults_then_each_operation_suffers_its_own_and_those_of_every_operation(
    tmp_path: Path,
) -> None:
    faults = {"list_rewards": {"rate_limit_429": 1.0}, "redeem": {"lost_after_commit": 1.0}}
    with running_sandbox_service(tmp_path, faults=faults) as service, service.client() as client:
        body = redeem_body(service, "start-lost")
        listed = client.get("/v1/rewards")
        balances = client.get("/v1/balances", params={"user_id": "start-lost"})
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            client.post("/v1/redemptions", json=body, headers={"Idempotency-Key": "start-1"})
        committed = redemptions_of(service, "start-1")
        replay = client.post("/v1/redemptions", json=body, headers={"Idempotency-Key": "start-1", FAULT_HEADER: "none"})

    assert listed.status_code == 429 and listed.headers["Retry-After"] == "1"
    assert balances.status_code == 200  # no rate for get_balances
    assert committed == 1  # committed, then the answer was lost
    assert replay.status_code == 200 and replay.json()["replayed"] is True


def test_given_a_seed_then_the_service_draws_the_faults_a_plan_with_that_seed_predicts(tmp_path: Path) -> None:
    rates = {"*": {"error_503": 0.5}}
    plan = FaultPlan(rates=rates, seed=11)
    predicted = [503 if plan.take("list_rewards") else 200 for _ in range(24)]

    with running_sandbox_service(tmp_path, faults=rates, fault_seed=11) as service, service.client() as client:
        seen = [client.get("/v1/rewards", params={"limit": 1}).status_code for _ in range(24)]

    assert seen == predicted
    assert 200 in predicted and 503 in predicted  # both outcomes, or the comparison proves little


def test_given_rates_then_one_draw_per_call_picks_at_most_one_fault_in_those_shares() -> None:
    plan = FaultPlan(rates={"redeem": {"reset": 0.25}, "*": {"error_503": 0.25}}, seed=3)

    redeem = [plan.take("redeem") for _ in range(4000)]
    listing = [plan.take("list_rewards") for _ in range(4000)]

    def share(faults: list[Any], kind: str | None) -> float:
        return sum(1 for fault in faults if (fault.kind if fault else None) == kind) / len(faults)

    assert 0.22 < share(redeem, "reset") < 0.28 and 0.22 < share(redeem, "error_503") < 0.28
    assert 0.22 < share(listing, "error_503") < 0.28 and share(listing, "reset") == 0


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ('{"redeem": {"explode": 0.1}}', "unknown fault 'explode'"),
        ('{"redeem_all": {"reset": 0.1}}', "unknown operation 'redeem_all'"),
        ('{"redeem": {"reset": 1.5}}', "must be a number from 0 to 1"),
        ('{"redeem": {"reset": -0.1}}', "must be a number from 0 to 1"),
        ('{"redeem": {"reset": true}}', "must be a number from 0 to 1"),
        ('{"redeem": {"reset": 0.6}, "*": {"error_503": 0.5}}', "add up to more than 1"),
        ('{"redeem": 0.1}', "must map fault kinds to rates"),
        ("[]", "expected a JSON object"),
        ("{not json", "must be a JSON object"),
    ],
)
def test_given_a_fault_table_the_service_cannot_use_then_a_settings_error_naming_the_variable(
    tmp_path: Path, value: str, complaint: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(data_dir=tmp_path, sandbox_faults=value)

    assert "GIFTGRAPH_SANDBOX_FAULTS" in str(caught.value) and complaint in str(caught.value)


def test_given_a_fault_table_then_settings_keep_it_checked(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, sandbox_faults='{"redeem": {"lost_after_commit": 0.1}, "*": {}}')

    assert settings.sandbox_faults == {"redeem": {"lost_after_commit": 0.1}, "*": {}}
    assert load_settings(data_dir=tmp_path).sandbox_faults == {}


# `giftgraph sandbox serve` with faults from the environment


def _clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIFTGRAPH_")}
    return {**env, "GIFTGRAPH_DATA_DIR": str(data_dir), **extra}


def test_given_faults_in_the_environment_when_serving_then_the_service_starts_with_them(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = _clean_env(
        tmp_path,
        GIFTGRAPH_SANDBOX_URL=url,
        GIFTGRAPH_SANDBOX_FAULTS=json.dumps({"list_rewards": {"rate_limit_429": 1}}),
        GIFTGRAPH_SANDBOX_FAULT_SEED="5",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "giftgraph", "sandbox", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_answering(f"{url}/openapi.json", process)
        credentials = SandboxCredentials.from_json((tmp_path / "sandbox-credentials.json").read_text())
        auth = (credentials.api_key, credentials.api_secret)
        listed = httpx.get(f"{url}/v1/rewards", auth=auth, timeout=10)
        balances = httpx.get(f"{url}/v1/balances", params={"user_id": "cli"}, auth=auth, timeout=10)
    finally:
        stop_process(process)

    assert listed.status_code == 429 and listed.json()["error"]["code"] == "rate_limited"
    assert balances.status_code == 200


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ({"GIFTGRAPH_SANDBOX_FAULTS": '{"*": {"explode": 1}}'}, "GIFTGRAPH_SANDBOX_FAULTS"),
        (
            {"GIFTGRAPH_SANDBOX_FAULTS": '{"*": {"reset": 0.1}}', "GIFTGRAPH_SANDBOX_FAULT_INJECTION": "false"},
            "fault injection is off",
        ),
    ],
)
def test_given_faults_the_service_cannot_start_with_then_serve_exits_1_saying_why(
    tmp_path: Path, extra: dict[str, str], complaint: str
) -> None:
    result = CliRunner().invoke(main, ["sandbox", "serve", "--port", "0"], env=_clean_env(tmp_path, **extra))

    assert result.exit_code == 1 and "invalid configuration" in result.output and complaint in result.output
    assert "Traceback" not in result.output
