"""`RestProvider` against the real sandbox service on loopback: same data as the embedded sandbox, both auth
modes, every injected fault, and exactly one provider-side redemption per idempotency key."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from giftgraph.rest import rest_provider
from providers.base import RedeemRequest, Reward, RewardAvailability, TransactionKind
from providers.errors import (
    IdempotencyConflict,
    InsufficientPoints,
    InvalidFaceValue,
    ProviderAuthenticationFailed,
    ProviderMalformedResponse,
    ProviderUnavailable,
    RedemptionOutcomeUnknown,
    RewardNotFound,
    RewardUnavailable,
)
from providers.events import EventHub
from providers.rest.adapter import RestProvider
from providers.sandbox import failing_reward_ids
from providers.sandbox.config import SandboxConfig
from tests.sandbox_service import SandboxService, running_sandbox_service
from tests.support import eventually, gql, live_server, make_settings, operation, without_extensions

pytestmark = pytest.mark.anyio

# Seconds. An answer that is coming is waited for, even on a loaded machine: a spurious timeout would
# add an attempt (and a replay) the test does not expect.
READ_TIMEOUT = 3.0
HANG_READ_TIMEOUT = 1.5  # only in the tests whose hang must time out: still far above a loopback answer
HANG = 10.0  # seconds the service hangs: far past HANG_READ_TIMEOUT, and it stops early when the client leaves
START = 10_000  # the sandbox's starting balance


# Helpers


@contextmanager
def sandbox_service(tmp_path: Path, **overrides: Any) -> Iterator[SandboxService]:
    """A service of its own, for tests that need another configuration."""
    with running_sandbox_service(tmp_path / "provider", **overrides) as service:
        yield service


@pytest.fixture(scope="module")
def shared_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxService]:
    # One service for the module (starting one costs more than most tests): tests use users and
    # idempotency keys of their own, and schedule exactly the faults they consume. Redemptions stay
    # PENDING: a fulfilment landing between a REST read and the embedded one would make them differ.
    sandbox = SandboxConfig(fulfilment_delay=3600)
    with running_sandbox_service(tmp_path_factory.mktemp("provider"), sandbox=sandbox) as service:
        yield service


@pytest.fixture
def service(shared_service: SandboxService) -> Iterator[SandboxService]:
    yield shared_service
    shared_service.app.state.faults.clear()  # a failed test's unconsumed faults must not reach the next


@asynccontextmanager
async def connected(
    service: SandboxService, tmp_path: Path, *, auth: str = "api_key", events: EventHub | None = None, **overrides: Any
) -> AsyncIterator[RestProvider]:
    """A started RestProvider built by the gateway's own factory, pointed at `service`."""
    credentials = service.credentials
    values: dict[str, Any] = {
        "provider": "rest",
        "provider_base_url": service.url,
        "provider_auth": auth,
        "provider_read_timeout": READ_TIMEOUT,
        "provider_retry_base_delay": 0.01,
        "provider_retry_max_delay": 0.05,
        "provider_retry_budget_min_per_second": 100.0,  # many retries in one test: never refused by the budget
        "provider_rate_limit_per_second": 0,
    }
    if auth == "api_key":
        values |= {"provider_api_key": credentials.api_key, "provider_api_secret": credentials.api_secret}
    else:
        values |= {"provider_client_id": credentials.client_id, "provider_client_secret": credentials.client_secret}
    values.update(overrides)
    provider = rest_provider(make_settings(tmp_path / "gateway", **values), events or EventHub())
    await provider.start()
    try:
        yield provider
    finally:
        await provider.aclose()


def redeemable(service: SandboxService, *, skip: int = 0) -> Reward:
    """An AVAILABLE reward whose fulfilment succeeds, with a face value it allows at its minimum."""
    failing = failing_reward_ids(service.provider.catalog)
    rewards = [
        reward
        for reward in service.provider.catalog
        if reward.availability is RewardAvailability.AVAILABLE and reward.id not in failing
    ]
    return rewards[skip]


def request_for(reward: Reward, key: str, *, user_id: str | None = None, points: int = 500) -> RedeemRequest:
    return RedeemRequest(
        user_id=user_id or f"user-{key}",  # a user per key: tests sharing a service never share a balance
        reward_id=reward.id,
        face_value=reward.denomination.min_value,
        points=points,
        idempotency_key=key,
    )


def assert_one_redemption(service: SandboxService, request: RedeemRequest) -> None:
    """Exactly one redemption under the request's key, one debit for every redemption, and the user debited once.

    A client that gave up on an answer may learn the outcome before the provider has committed it: the
    redemption is waited for, then counted exactly.
    """
    eventually(lambda: request.idempotency_key in service.stats()["redemptions_by_key"])
    stats = service.stats()
    assert stats["redemptions_by_key"][request.idempotency_key] == 1
    assert set(stats["redemptions_by_key"].values()) == {1}
    assert stats["redemptions"] == stats["redeem_transactions"] == len(stats["redemptions_by_key"])
    (balance,) = service.run(service.provider.get_balances([request.user_id]))
    assert balance.available == START - request.points


# The same data as the embedded sandbox


@pytest.mark.parametrize("auth", ["api_key", "oauth2"])
async def test_every_port_operation_answers_like_the_embedded_sandbox(
    service: SandboxService, tmp_path: Path, auth: str
) -> None:
    embedded = service.provider  # the SandboxProvider behind the service: the answers to match
    request = request_for(redeemable(service), f"parity-{auth}")
    user, newcomer = request.user_id, f"newcomer-{auth}"
    async with connected(service, tmp_path, auth=auth) as rest:
        await rest.check()
        first = await rest.list_rewards(cursor=None, limit=5)
        second = await rest.list_rewards(cursor=first.next_cursor, limit=5)
        assert first == service.run(embedded.list_rewards(cursor=None, limit=5))
        assert second == service.run(embedded.list_rewards(cursor=first.next_cursor, limit=5))

        ids = [embedded.catalog[7].id, "no-such-reward", embedded.catalog[2].id]
        assert await rest.get_rewards(ids) == service.run(embedded.get_rewards(ids))

        result = await rest.redeem(request)
        assert result.replayed is False

        balances = await rest.get_balances([user, newcomer])  # enrols the newcomer, as the port does
        assert balances == service.run(embedded.get_balances([user, newcomer]))
        assert balances[0].available == START - request.points

        history = await rest.list_transactions(user, kinds=None, older_than=None, newer_than=None, limit=10)
        assert [tx.kind for tx in history.items] == [TransactionKind.REDEEM, TransactionKind.EARN]
        newest = history.items[0].position
        for arguments in [
            {"kinds": None, "older_than": None, "newer_than": None, "limit": 10},
            {"kinds": frozenset({TransactionKind.REDEEM}), "older_than": None, "newer_than": None, "limit": 10},
            {"kinds": None, "older_than": newest, "newer_than": None, "limit": 10},
            {"kinds": None, "older_than": None, "newer_than": 0, "limit": 1, "from_oldest": True},
        ]:
            assert await rest.list_transactions(user, **arguments) == service.run(
                embedded.list_transactions(user, **arguments)
            )

        tx_ids = [tx.id for tx in history.items] + ["tx_unknown"]
        assert await rest.get_transactions(tx_ids) == service.run(embedded.get_transactions(tx_ids))
        redemption_ids = [result.redemption.id, "rd_unknown"]
        assert await rest.get_redemptions(redemption_ids) == service.run(embedded.get_redemptions(redemption_ids))

    assert rest.calls.get("list_rewards") == 2
    assert_one_redemption(service, request)


async def test_a_batch_over_the_contract_maximum_is_chunked_and_still_matches(
    service: SandboxService, tmp_path: Path
) -> None:
    ids = [reward.id for reward in service.provider.catalog[:250]]
    before = service.stats()["calls"].get("get_rewards", 0)
    async with connected(service, tmp_path) as rest:
        found = await rest.get_rewards(ids)

    assert found == list(service.provider.catalog[:250])
    assert service.stats()["calls"]["get_rewards"] - before == 3


async def test_redeem_replays_the_same_key_and_maps_every_refusal(service: SandboxService, tmp_path: Path) -> None:
    reward, other = redeemable(service), redeemable(service, skip=1)
    request = request_for(reward, "replay-a")
    async with connected(service, tmp_path) as rest:
        first = await rest.redeem(request)
        again = await rest.redeem(request)
        assert (again.replayed, again.redemption.id) == (True, first.redemption.id)

        with pytest.raises(IdempotencyConflict):
            await rest.redeem(replace(request, reward_id=other.id))
        with pytest.raises(InsufficientPoints):
            await rest.redeem(request_for(reward, "replay-b", points=START * 10))
        with pytest.raises(RewardNotFound):
            await rest.redeem(replace(request_for(reward, "replay-c"), reward_id="no-such-reward"))
        with pytest.raises(InvalidFaceValue):
            face_value = reward.denomination.max_value + 1
            await rest.redeem(replace(request_for(reward, "replay-d"), face_value=face_value))
        unavailable = redeemable(service, skip=2)
        service.set_availability(unavailable.id, "OUT_OF_STOCK")
        with pytest.raises(RewardUnavailable):
            await rest.redeem(request_for(unavailable, "replay-e"))

    assert_one_redemption(service, request)
    assert not {"replay-b", "replay-c", "replay-d", "replay-e"} & set(service.stats()["redemptions_by_key"])


# Authentication


async def test_an_oauth2_token_is_refreshed_before_it_expires(tmp_path: Path) -> None:
    with sandbox_service(tmp_path, token_ttl_seconds=4) as service:
        async with connected(service, tmp_path, auth="oauth2") as rest:
            await rest.check()
            await rest.check()  # the cached token
            assert service.app.state.tokens.issued == 1
            await anyio.sleep(2.4)  # past the refresh point (half a 4 s lifetime), before expiry
            await rest.check()

        assert service.app.state.tokens.issued == 2


async def test_a_token_the_provider_no_longer_accepts_is_replaced_once_and_the_call_succeeds(tmp_path: Path) -> None:
    skew = [0.0]  # the service's clock runs ahead when bumped: every token it issued expires at once
    with sandbox_service(tmp_path, clock=lambda: time.monotonic() + skew[0]) as service:
        async with connected(service, tmp_path, auth="oauth2") as rest:
            await rest.check()
            skew[0] = 7200.0
            page = await rest.list_rewards(cursor=None, limit=3)

        assert len(page.items) == 3
        assert service.app.state.tokens.issued == 2
        assert rest.http.stats.attempts == 2  # one per call: the 401 was handled inside the auth flow


@pytest.mark.parametrize("auth", ["api_key", "oauth2"])
async def test_wrong_credentials_fail_authentication(service: SandboxService, tmp_path: Path, auth: str) -> None:
    wrong = {"api_key": {"provider_api_secret": "wrong"}, "oauth2": {"provider_client_secret": "wrong"}}[auth]
    async with connected(service, tmp_path, auth=auth, **wrong) as rest:
        with pytest.raises(ProviderAuthenticationFailed) as caught:
            await rest.list_rewards(cursor=None, limit=3)

    assert "wrong" not in str(caught.value)
    assert rest.http.stats.attempts == 1  # a configuration problem: never retried


# Faults on reads


@pytest.mark.parametrize(
    ("kind", "seconds"),
    [
        ("error_503", None),
        ("error_502", None),
        ("error_504", None),
        ("rate_limit_429", 0),
        ("reset", None),
        ("hang", HANG),
    ],
)
async def test_a_temporary_failure_on_a_read_is_retried_and_succeeds(
    service: SandboxService, tmp_path: Path, kind: str, seconds: float | None
) -> None:
    read_timeout = HANG_READ_TIMEOUT if kind == "hang" else READ_TIMEOUT
    async with connected(service, tmp_path, provider_read_timeout=read_timeout) as rest:
        service.fault("list_rewards", kind, times=2, seconds=seconds)
        page = await rest.list_rewards(cursor=None, limit=4)

    assert page == service.run(service.provider.list_rewards(cursor=None, limit=4))
    assert rest.http.stats.retries == 2


async def test_a_provider_that_stays_down_is_unavailable_after_the_attempts(
    service: SandboxService, tmp_path: Path
) -> None:
    async with connected(service, tmp_path, provider_retry_attempts=3) as rest:
        service.fault("get_balances", "error_503", times=3)
        with pytest.raises(ProviderUnavailable) as caught:
            await rest.get_balances(["down-1"])

    assert caught.value.status == 503
    assert rest.http.stats.attempts == 3


@pytest.mark.parametrize("kind", ["truncated", "malformed"])
async def test_a_broken_body_is_a_malformed_response_never_passed_on(
    service: SandboxService, tmp_path: Path, kind: str
) -> None:
    reward = service.provider.catalog[0]
    async with connected(service, tmp_path) as rest:
        service.fault("get_rewards", kind)
        with pytest.raises(ProviderMalformedResponse):
            await rest.get_rewards([reward.id])
        assert rest.http.stats.attempts == 1  # the provider answered: asking again would not repair it
        assert await rest.get_rewards([reward.id]) == [reward]  # and the next call is answered properly


# Faults on redemption: exactly one redemption and one debit per key


@pytest.mark.parametrize(("kind", "seconds"), [("lost_after_commit", None), ("hang_after_commit", HANG)])
async def test_a_redemption_answer_lost_after_commit_is_retried_and_replayed(
    service: SandboxService, tmp_path: Path, kind: str, seconds: float | None
) -> None:
    request = request_for(redeemable(service), f"lost-{kind}")
    read_timeout = HANG_READ_TIMEOUT if kind == "hang_after_commit" else READ_TIMEOUT
    async with connected(service, tmp_path, provider_read_timeout=read_timeout) as rest:
        service.fault("redeem", kind, seconds=seconds)
        result = await rest.redeem(request)

    assert result.replayed is True  # the second attempt found the first one's redemption
    assert rest.http.stats.retries == 1
    assert_one_redemption(service, request)


@pytest.mark.parametrize(
    ("kind", "seconds"), [("lost_after_commit", None), ("hang_after_commit", HANG), ("truncated", None)]
)
async def test_without_retries_a_lost_redemption_answer_is_an_unknown_outcome(
    service: SandboxService, tmp_path: Path, kind: str, seconds: float | None
) -> None:
    request = request_for(redeemable(service), f"unknown-{kind}")
    read_timeout = HANG_READ_TIMEOUT if kind == "hang_after_commit" else READ_TIMEOUT
    async with connected(service, tmp_path, provider_retry_attempts=1, provider_read_timeout=read_timeout) as rest:
        service.fault("redeem", kind, seconds=seconds)
        with pytest.raises(RedemptionOutcomeUnknown) as caught:
            await rest.redeem(request)
        assert caught.value.idempotency_key == request.idempotency_key
        assert_one_redemption(service, request)

        # What the reconciler does: ask again with the same key, and learn the first outcome.
        replay = await rest.redeem(request)

    assert replay.replayed is True
    assert_one_redemption(service, request)


async def test_a_redemption_refused_before_the_work_is_retried_and_made_once(
    service: SandboxService, tmp_path: Path
) -> None:
    request = request_for(redeemable(service), "refused-first")
    async with connected(service, tmp_path) as rest:
        service.fault("redeem", "error_503")
        result = await rest.redeem(request)

    assert result.replayed is False
    assert rest.http.stats.retries == 1
    assert_one_redemption(service, request)


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_either_transport_retries_a_reset_and_replays_a_lost_redemption(
    service: SandboxService, tmp_path: Path, transport: str
) -> None:
    request = request_for(redeemable(service), f"{transport}-1")
    async with connected(service, tmp_path, auth="oauth2", provider_transport=transport) as rest:
        service.fault("list_rewards", "reset")
        page = await rest.list_rewards(cursor=None, limit=4)
        service.fault("redeem", "lost_after_commit")
        result = await rest.redeem(request)

    assert page == service.run(service.provider.list_rewards(cursor=None, limit=4))
    assert result.replayed is True
    assert_one_redemption(service, request)


# The gateway on the rest provider


def test_the_gateway_serves_catalog_and_balance_from_the_rest_provider_like_the_embedded_one(tmp_path: Path) -> None:
    variables = {"first": 5}
    with running_sandbox_service(tmp_path) as service:
        # No credentials configured: in development a loopback provider shares the sandbox's generated file.
        settings = make_settings(tmp_path, provider="rest", provider_base_url=service.url)
        with live_server(settings) as gateway:
            token = gateway.token("viewer-1")
            catalog = gql(gateway, operation("Catalog"), variables, token=token)
            viewer = gql(gateway, operation("ViewerBalance"), token=token)
        calls = service.stats()["calls"]
        (balance,) = service.run(service.provider.get_balances(["viewer-1"]))

    with live_server(make_settings(tmp_path / "embedded")) as embedded:
        expected_catalog = gql(embedded, operation("Catalog"), variables, token=embedded.token("viewer-1"))

    assert "errors" not in catalog and "errors" not in viewer
    assert without_extensions(catalog) == without_extensions(expected_catalog)
    assert calls.get("list_rewards", 0) >= 1 and calls.get("get_balances", 0) >= 1  # served over REST
    served = viewer["data"]["viewer"]["balance"]
    assert (served["available"], served["pending"]) == (balance.available, balance.pending) == (START, 0)
    assert datetime.fromisoformat(served["updatedAt"]) == balance.updated_at
