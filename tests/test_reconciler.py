"""Redemptions whose outcome the provider left unknown: kept PENDING, then settled exactly once.

The provider here is the real embedded sandbox behind a thin boundary fake that loses the
answer after the sandbox committed (what a timeout or a dropped connection does to a REST
call), or refuses before doing anything (what a connection error does).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from giftgraph.settings import Settings
from providers import EventHub, RedeemRequest, RedeemResult
from providers.errors import ProviderUnavailable, RedemptionOutcomeUnknown
from providers.sandbox import SandboxConfig, SandboxProvider
from resolvers.redeem import provider_idempotency_key
from tests.support import (
    LiveServer,
    eventually,
    gql,
    live_server_with_provider,
    make_settings,
    operation,
    reward_to_redeem,
    run_on_server_loop,
)

REDEEM = operation("Redeem")
HISTORY = operation("History")


class LossySandbox(SandboxProvider):
    """The sandbox, except that scheduled redeem calls lose their answer or never arrive."""

    lose_answers = 0  # commit, then fail as if the response was lost on the way back
    refuse = 0  # fail before the sandbox sees the call (nothing committed)

    slow = 0.0  # seconds each redeem call waits before the sandbox sees it (a provider slower than the lease)

    entered = 0  # redeem calls that have reached this provider, counted before any wait

    async def redeem(self, request: RedeemRequest) -> RedeemResult:
        self.entered += 1
        if self.slow:
            await asyncio.sleep(self.slow)
        # Scheduled losses come first, then scheduled refusals.
        if self.lose_answers > 0:
            self.lose_answers -= 1
            await super().redeem(request)
            raise RedemptionOutcomeUnknown("read timeout after sending", provider=self.name)
        if self.refuse > 0:
            self.refuse -= 1
            raise ProviderUnavailable("connection refused", provider=self.name)
        return await super().redeem(request)


def lossy_provider(settings: Settings, events: EventHub) -> LossySandbox:
    return LossySandbox(
        database_url=settings.sandbox_database_url,
        events=events,
        config=SandboxConfig(fulfilment_delay=60.0, starting_balance=10_000),
    )


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = make_settings(tmp_path, reconcile_interval_seconds=0.1, reconcile_max_backoff_seconds=0.5)
    with live_server_with_provider(settings, lossy_provider) as running:
        yield running


def redeem(server: LiveServer, token: str, cmid: str, reward: dict[str, Any]) -> dict[str, Any]:
    variables = {"input": {"clientMutationId": cmid, "rewardId": reward["rewardId"], "faceValue": reward["faceValue"]}}
    return gql(server, REDEEM, variables, token=token)["data"]["redeem"]


def provider_side(server: LiveServer, user_id: str, cmid: str) -> tuple[int, int]:
    """(redemptions under the key, REDEEM debits of the user) in the sandbox's own ledger."""
    key = provider_idempotency_key(user_id, cmid)

    async def count() -> tuple[int, int]:
        engine = server.provider._store._engine
        async with engine.connect() as conn:
            redemptions = await conn.scalar(
                sqlalchemy.text("SELECT count(*) FROM redemptions WHERE idempotency_key = :k"), {"k": key}
            )
            debits = await conn.scalar(
                sqlalchemy.text("SELECT count(*) FROM transactions WHERE user_id = :u AND kind = 'REDEEM'"),
                {"u": user_id},
            )
        return redemptions, debits

    return run_on_server_loop(server, count())


def pending_keys(server: LiveServer) -> int:
    async def count() -> int:
        async with server.app.state.engine.connect() as conn:
            return await conn.scalar(
                sqlalchemy.text("SELECT count(*) FROM idempotency_keys WHERE state = 'in_progress'")
            )

    return run_on_server_loop(server, count())


def test_given_the_answer_lost_after_commit_then_the_client_sees_pending_and_the_reconciler_settles_it_once(
    server: LiveServer,
) -> None:
    user, token = "rec-lost", server.token("rec-lost")
    reward = reward_to_redeem(server)
    server.provider.lose_answers = 1

    first = redeem(server, token, "lost-1", reward)

    assert [e["code"] for e in first["userErrors"]] == ["REDEMPTION_IN_PROGRESS"]
    assert first["redemption"] is None
    eventually(lambda: pending_keys(server) == 0)  # the reconciler asked again and stored the outcome
    retried = redeem(server, token, "lost-1", reward)
    assert retried["userErrors"] == []
    assert retried["redemption"]["status"] == "PENDING"  # the provider's own status: fulfilment is slow
    assert provider_side(server, user, "lost-1") == (1, 1)
    assert server.provider.calls.get("redeem") == 2  # the lost call and the reconciler's replay


def test_given_the_answer_lost_and_the_provider_then_down_then_the_key_stays_pending_until_it_answers(
    server: LiveServer,
) -> None:
    user, token = "rec-down", server.token("rec-down")
    reward = reward_to_redeem(server)
    server.provider.lose_answers = 1
    server.provider.refuse = 3  # the next three asks never reach the provider

    first = redeem(server, token, "down-1", reward)

    assert [e["code"] for e in first["userErrors"]] == ["REDEMPTION_IN_PROGRESS"]
    # A refusal after a lost answer says nothing about the first call: the key is never released.
    eventually(lambda: server.provider.refuse == 0)
    eventually(lambda: pending_keys(server) == 0)
    retried = redeem(server, token, "down-1", reward)
    assert retried["userErrors"] == []
    assert provider_side(server, user, "down-1") == (1, 1)


def test_given_a_refusal_before_sending_then_nothing_is_kept_and_the_client_may_retry(server: LiveServer) -> None:
    user, token = "rec-refused", server.token("rec-refused")
    reward = reward_to_redeem(server)
    server.provider.refuse = 1

    first = redeem(server, token, "refused-1", reward)

    assert [e["code"] for e in first["userErrors"]] == ["PROVIDER_UNAVAILABLE"]
    assert pending_keys(server) == 0
    assert provider_side(server, user, "refused-1") == (0, 0)
    retried = redeem(server, token, "refused-1", reward)
    assert retried["userErrors"] == []
    assert provider_side(server, user, "refused-1") == (1, 1)


def test_given_a_pending_key_when_the_client_retries_before_the_reconciler_then_it_resends_the_recorded_request(
    tmp_path: Path,
) -> None:
    # A reconciler that never wakes up: only the client's retry can settle the key.
    settings = make_settings(tmp_path, reconcile_interval_seconds=3600.0, reconcile_max_backoff_seconds=3600.0)
    with live_server_with_provider(settings, lossy_provider) as server:
        user, token = "rec-retry", server.token("rec-retry")
        reward = reward_to_redeem(server)
        server.provider.lose_answers = 1
        first = redeem(server, token, "retry-1", reward)
        assert [e["code"] for e in first["userErrors"]] == ["REDEMPTION_IN_PROGRESS"]

        # The deferral holds the key for a while; a takeover after it resends the recorded request.
        run_on_server_loop(server, _expire_leases(server))
        retried = redeem(server, token, "retry-1", reward)

        assert retried["userErrors"] == []
        assert provider_side(server, user, "retry-1") == (1, 1)
        again = redeem(server, token, "retry-1", reward)
        assert again["redemption"]["id"] == retried["redemption"]["id"]


async def _expire_leases(server: LiveServer) -> None:
    async with server.app.state.engine.begin() as conn:
        await conn.execute(sqlalchemy.text("UPDATE idempotency_keys SET lease_until = 0"))


def test_given_a_provider_slower_than_the_lease_then_the_same_process_never_sends_the_call_twice(
    tmp_path: Path,
) -> None:
    # The lease lapses while the call is still waiting for the provider; the reconciler (every 0.1 s) and a
    # client retry in this process see the lapsed lease but leave the live call alone.
    settings = make_settings(tmp_path, reconcile_interval_seconds=0.1, idempotency_lease_seconds=0.2)
    with live_server_with_provider(settings, lossy_provider) as slow_server:
        user, token = "rec-slow", slow_server.token("rec-slow")
        reward = reward_to_redeem(slow_server)
        slow_server.provider.slow = 2.0

        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            first_call = pool.submit(redeem, slow_server, token, "slow-1", reward)
            # The first request's call has reached the provider (a loaded machine may take a while);
            # then past the 0.2 s lease, while the call is still there.
            eventually(lambda: slow_server.provider.entered == 1)
            time.sleep(0.4)
            retried = redeem(slow_server, token, "slow-1", reward)
            first = first_call.result(timeout=30)
        eventually(lambda: pending_keys(slow_server) == 0)

        assert first["userErrors"] == [] and first["redemption"]["status"] == "PENDING"
        assert [e["code"] for e in retried["userErrors"]] in (["REDEMPTION_IN_PROGRESS"], [])
        assert slow_server.provider.calls.get("redeem") == slow_server.provider.entered == 1
        assert provider_side(slow_server, user, "slow-1") == (1, 1)
