"""The gateway over a network that fails: every sandbox fault, seen from the GraphQL client.

The gateway (a real server on loopback, provider=rest) talks to the sandbox REST service (another
real server on loopback) that injects each fault. The client sees either the right data, a typed
userError, or `extensions.code: "PROVIDER_UNAVAILABLE"`; never a 500. The sandbox's own counts
prove the side effects: one redemption and one debit per clientMutationId, whatever happened.
"""

from __future__ import annotations

import socketserver
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from resolvers.ids import encode_global_id
from resolvers.redeem import provider_idempotency_key
from tests.sandbox_service import SandboxService, running_sandbox_service
from tests.support import (
    LiveServer,
    codes,
    eventually,
    live_server,
    make_settings,
    operation,
    post,
)
from tests.test_http_fakes import GARBAGE

REDEEM = operation("Redeem")
VIEWER_BALANCE = operation("ViewerBalance")
HISTORY = operation("History")
START = 10_000
# Seconds. An answer that is coming is waited for, even on a loaded machine: a spurious timeout would add
# an attempt the exact counts below do not expect. Only the gateway for hangs gives up sooner.
READ_TIMEOUT = 3.0
HANG_READ_TIMEOUT = 1.5  # still far above a loopback answer
HANG = 10.0  # seconds a hang fault lasts: far past HANG_READ_TIMEOUT (it ends when the client leaves)
HANGS = ("hang", "hang_after_commit")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxService]:
    with running_sandbox_service(tmp_path_factory.mktemp("faults-sandbox")) as service:
        yield service


def gateway_settings(data_dir: Path, sandbox: SandboxService, **overrides: Any) -> Any:
    values: dict[str, Any] = {
        "provider": "rest",
        "provider_base_url": sandbox.url,
        "provider_api_key": sandbox.credentials.api_key,
        "provider_api_secret": sandbox.credentials.api_secret,
        "provider_read_timeout": READ_TIMEOUT,
        "provider_retry_attempts": 4,
        "provider_retry_base_delay": 0.01,
        "provider_retry_max_delay": 0.05,
        "provider_retry_budget_min_per_second": 100.0,  # these tests retry a lot on purpose
        "provider_breaker_failure_threshold": 1000,  # the breaker has a test of its own below
        "provider_rate_limit_per_second": 0,
        "catalog_volatile_ttl": 0.001,  # every catalog read reaches the provider
        "reconcile_interval_seconds": 0.2,
        "reconcile_max_backoff_seconds": 0.5,
        "idempotency_wait_seconds": 0.5,
    }
    values.update(overrides)
    return make_settings(data_dir, **values)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, sandbox: SandboxService) -> Iterator[LiveServer]:
    with live_server(gateway_settings(tmp_path_factory.mktemp("faults-gateway"), sandbox)) as running:
        yield running


@pytest.fixture(scope="module")
def hang_gateway(tmp_path_factory: pytest.TempPathFactory, sandbox: SandboxService) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("faults-hang-gateway")
    with live_server(gateway_settings(data_dir, sandbox, provider_read_timeout=HANG_READ_TIMEOUT)) as running:
        yield running


def gateway_for(request: pytest.FixtureRequest, fault: str) -> LiveServer:
    """The shared gateway; for a hang, the one that gives up on an answer soon enough for the test."""
    return request.getfixturevalue("hang_gateway" if fault in HANGS else "gateway")


def fault_seconds(fault: str) -> float | None:
    return HANG if fault in HANGS else 1.0 if fault == "rate_limit_429" else None


@pytest.fixture(autouse=True)
def no_faults_left(sandbox: SandboxService) -> Iterator[None]:
    yield
    sandbox.clear_faults()


def user() -> str:
    return f"faults-{uuid.uuid4().hex[:10]}"


def balance(gateway: LiveServer, user_id: str) -> dict[str, Any]:
    response = post(gateway, VIEWER_BALANCE, token=gateway.token(user_id))
    assert response.status_code == 200, response.text
    return response.json()


def redeem(gateway: LiveServer, user_id: str, cmid: str, sandbox: SandboxService) -> dict[str, Any]:
    reward = next(r for r in sandbox.provider.catalog if r.availability.value == "AVAILABLE")
    variables = {
        "input": {
            "clientMutationId": cmid,
            "rewardId": encode_global_id("Reward", reward.id),
            "faceValue": str(reward.denomination.min_value),
        }
    }
    response = post(gateway, REDEEM, variables, token=gateway.token(user_id))
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["redeem"]


def http_stats(gateway: LiveServer) -> Any:
    """The gateway's provider HTTP client counters (calls, attempts, retries...)."""
    return gateway.services.provider.http.stats


def calls_of(sandbox: SandboxService, operation_name: str) -> int:
    return sandbox.stats()["calls"].get(operation_name, 0)


def effects(sandbox: SandboxService, user_id: str, cmid: str) -> int:
    return sandbox.stats()["redemptions_by_key"].get(provider_idempotency_key(user_id, cmid), 0)


def debits(sandbox: SandboxService, user_id: str) -> int:
    """REDEEM transactions of the user in the sandbox's own ledger file."""
    path = sandbox.config.database_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as conn:
        query = "SELECT count(*) FROM transactions WHERE user_id = ? AND kind = 'REDEEM'"
        return conn.execute(query, (user_id,)).fetchone()[0]


# Reads: a temporary fault is retried away; a lasting one is PROVIDER_UNAVAILABLE


@pytest.mark.parametrize("fault", ["error_502", "error_503", "error_504", "rate_limit_429", "hang", "reset"])
def test_given_one_temporary_fault_on_a_read_then_the_gateway_retries_and_the_client_gets_the_data(
    request: pytest.FixtureRequest, sandbox: SandboxService, fault: str
) -> None:
    gateway = gateway_for(request, fault)
    user_id = user()
    balance(gateway, user_id)  # enrol first, so the faulted call is a plain read
    before = http_stats(gateway)
    sandbox.fault("get_balances", fault, seconds=fault_seconds(fault))

    body = balance(gateway, user_id)

    assert "errors" not in body, body
    assert body["data"]["viewer"]["balance"]["available"] == START
    after = http_stats(gateway)
    assert (after.calls - before.calls, after.attempts - before.attempts) == (1, 2)  # one call, one retry


@pytest.mark.parametrize("fault", ["error_503", "reset", "malformed", "hang"])
def test_given_a_fault_on_every_attempt_then_the_client_gets_provider_unavailable_not_a_500(
    request: pytest.FixtureRequest, sandbox: SandboxService, fault: str
) -> None:
    gateway = gateway_for(request, fault)
    user_id = user()
    balance(gateway, user_id)
    sandbox.fault("get_balances", fault, times=4, seconds=fault_seconds(fault))

    body = balance(gateway, user_id)

    assert codes(body) == ["PROVIDER_UNAVAILABLE"]
    assert body["data"] is None or body["data"]["viewer"] is None or body["data"]["viewer"]["balance"] is None


@pytest.mark.parametrize("fault", ["truncated", "malformed"])
def test_given_a_garbled_answer_then_it_never_reaches_the_client_and_the_next_read_is_served(
    gateway: LiveServer, sandbox: SandboxService, fault: str
) -> None:
    user_id = user()
    balance(gateway, user_id)
    sandbox.fault("get_balances", fault)

    garbled = balance(gateway, user_id)

    # Not a temporary failure (the provider answered, wrongly): reported, not retried, not passed on.
    assert codes(garbled) == ["PROVIDER_UNAVAILABLE"]
    assert garbled["data"] is None
    assert balance(gateway, user_id)["data"]["viewer"]["balance"]["available"] == START


@contextmanager
def garbling_provider(answer: bytes) -> Iterator[str]:
    """A loopback "provider" answering every request with `answer`, bytes no HTTP parser accepts; its URL."""

    class Garble(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                received += chunk
            self.request.sendall(answer)

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Garble) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join(timeout=10)


@pytest.mark.parametrize("answer", ["garbage_status", "garbage_header", "bad_chunk"])
def test_given_an_answer_that_is_not_http_on_the_default_transport_then_provider_unavailable_not_a_500(
    tmp_path: Path, answer: str
) -> None:
    with garbling_provider(GARBAGE[answer]) as url:
        settings = make_settings(
            tmp_path,
            provider="rest",
            provider_base_url=url,
            provider_api_key="key",
            provider_api_secret="secret",
            provider_retry_base_delay=0.01,
            provider_retry_max_delay=0.05,
        )
        assert settings.provider_transport == "aiohttp"  # the default: it lets aiohttp's parser errors through
        with live_server(settings) as garbled:
            response = post(garbled, VIEWER_BALANCE, token=garbled.token(user()))

    assert response.status_code == 200, response.text
    assert codes(response.json()) == ["PROVIDER_UNAVAILABLE"]


def test_given_a_balance_past_graphql_int_at_the_provider_then_provider_unavailable_not_a_500(
    gateway: LiveServer, sandbox: SandboxService
) -> None:
    user_id = user()
    balance(gateway, user_id)
    path = sandbox.config.database_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as conn:  # a provider other than the sandbox, which refuses such a grant
        conn.execute("UPDATE users SET available = ? WHERE user_id = ?", (2**31, user_id))

    body = balance(gateway, user_id)

    assert codes(body) == ["PROVIDER_UNAVAILABLE"]
    assert body["data"] is None


def test_given_an_error_500_on_a_read_then_it_is_not_retried_and_the_client_gets_provider_unavailable(
    gateway: LiveServer, sandbox: SandboxService
) -> None:
    user_id = user()
    balance(gateway, user_id)
    before = http_stats(gateway)
    sandbox.fault("get_balances", "error_500")

    body = balance(gateway, user_id)

    assert codes(body) == ["PROVIDER_UNAVAILABLE"]
    assert http_stats(gateway).attempts == before.attempts + 1


# Redemption: retried only with the same key; an unknown outcome stays PENDING until reconciled


@pytest.mark.parametrize("fault", ["error_503", "rate_limit_429", "reset", "lost_after_commit", "hang_after_commit"])
def test_given_one_fault_on_redeem_then_the_retry_with_the_same_key_makes_exactly_one_redemption(
    request: pytest.FixtureRequest, sandbox: SandboxService, fault: str
) -> None:
    gateway = gateway_for(request, fault)
    user_id, cmid = user(), "once"
    sandbox.fault("redeem", fault, seconds=fault_seconds(fault))

    payload = redeem(gateway, user_id, cmid, sandbox)

    assert payload["userErrors"] == []
    assert payload["redemption"]["status"] in ("PENDING", "FULFILLED")
    assert effects(sandbox, user_id, cmid) == 1
    assert debits(sandbox, user_id) == 1


@pytest.mark.parametrize("fault", ["lost_after_commit", "hang_after_commit", "error_500", "error_503"])
def test_given_the_answer_lost_on_every_attempt_then_pending_and_the_reconciler_settles_exactly_once(
    request: pytest.FixtureRequest, sandbox: SandboxService, fault: str
) -> None:
    gateway = gateway_for(request, fault)
    user_id, cmid = user(), "unknown"
    sandbox.fault("redeem", fault, times=4, seconds=fault_seconds(fault))

    first = redeem(gateway, user_id, cmid, sandbox)

    # A 5xx may come from a proxy after the provider committed: like a lost answer, it is reconciled.
    assert [e["code"] for e in first["userErrors"]] == ["REDEMPTION_IN_PROGRESS"]
    assert first["redemption"] is None

    def settled() -> bool:
        return redeem(gateway, user_id, cmid, sandbox)["userErrors"] == []

    eventually(settled, timeout=30, interval=0.5)  # each look is a redeem attempt, and those have a budget
    retried = redeem(gateway, user_id, cmid, sandbox)
    assert retried["userErrors"] == []
    assert effects(sandbox, user_id, cmid) == 1
    assert debits(sandbox, user_id) == 1
    again = redeem(gateway, user_id, cmid, sandbox)
    assert again["redemption"]["id"] == retried["redemption"]["id"]


def test_given_a_redemption_the_user_cannot_afford_then_a_typed_user_error_and_no_debit(
    gateway: LiveServer, sandbox: SandboxService
) -> None:
    user_id = user()
    reward = next(
        r for r in sandbox.provider.catalog if r.availability.value == "AVAILABLE" and r.denomination.max_value >= 150
    )
    face_value = max(v for v in (reward.denomination.face_values or (reward.denomination.max_value,)))
    variables = {
        "input": {
            "clientMutationId": "too-dear",
            "rewardId": encode_global_id("Reward", reward.id),
            "faceValue": str(face_value),
        }
    }

    body = post(gateway, REDEEM, variables, token=gateway.token(user_id)).json()

    assert [e["code"] for e in body["data"]["redeem"]["userErrors"]] == ["INSUFFICIENT_POINTS"]
    assert debits(sandbox, user_id) == 0


def test_given_a_provider_failing_repeatedly_then_the_circuit_opens_and_calls_fail_fast_until_a_probe_succeeds(
    tmp_path: Path, sandbox: SandboxService
) -> None:
    settings = gateway_settings(
        tmp_path,
        sandbox,
        provider_retry_attempts=1,
        provider_breaker_failure_threshold=3,
        provider_breaker_cooldown_seconds=3.0,  # outlasts the round trips that check it is open, however slow
    )
    with live_server(settings) as breaking:
        user_id = user()
        balance(breaking, user_id)
        sandbox.fault("get_balances", "error_503", times=3)
        for _ in range(3):
            assert codes(balance(breaking, user_id)) == ["PROVIDER_UNAVAILABLE"]
        sandbox.clear_faults()
        before = calls_of(sandbox, "get_balances")

        assert codes(balance(breaking, user_id)) == ["PROVIDER_UNAVAILABLE"]  # open: failed fast
        assert calls_of(sandbox, "get_balances") == before  # nothing reached the provider
        # Failing fast until the cool-down ends; then the probe goes through and closes it.
        eventually(lambda: "errors" not in balance(breaking, user_id), timeout=30, interval=0.2)
        assert calls_of(sandbox, "get_balances") == before + 1


def test_given_a_429_asking_for_longer_than_the_cap_then_the_redeem_stops_at_once_and_nothing_is_kept(
    gateway: LiveServer, sandbox: SandboxService
) -> None:
    user_id, cmid = user(), "throttled"
    before = http_stats(gateway)
    sandbox.fault("redeem", "rate_limit_429", seconds=30.0)  # Retry-After: 30, over the 10 s cap

    started = time.monotonic()
    first = redeem(gateway, user_id, cmid, sandbox)

    assert time.monotonic() - started < 5
    # A 429 is a refusal: nothing was done, so the key is released and PROVIDER_UNAVAILABLE says retry.
    assert [e["code"] for e in first["userErrors"]] == ["PROVIDER_UNAVAILABLE"]
    assert http_stats(gateway).attempts - before.attempts == 2  # the reward lookup and the one redeem attempt
    assert effects(sandbox, user_id, cmid) == 0
    retried = redeem(gateway, user_id, cmid, sandbox)
    assert retried["userErrors"] == []
    assert (effects(sandbox, user_id, cmid), debits(sandbox, user_id)) == (1, 1)
