"""The idempotency store on PostgreSQL: one holder per key across processes, replay and conflict.

Each engine has its own pool, as separate gateway processes would; the schema is a fresh one per test
(the `engines` fixture), skipped without a server except under .ci/run.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from resolvers.idempotency import ClaimState, IdempotencyStore
from tests.test_ledger_postgres import engines  # noqa: F401  (the PostgreSQL fixture)

pytestmark = pytest.mark.anyio


async def test_given_two_processes_racing_for_one_key_then_one_holds_it_and_the_rest_replay_its_result(
    engines: Callable[[], AsyncEngine],  # noqa: F811
) -> None:
    stores = [IdempotencyStore(engines(), ttl_seconds=86_400, lease_seconds=60) for _ in range(2)]
    for store in stores:
        await store.start()

    claims = await asyncio.gather(*(stores[n % 2].claim("alice", "cmid-1", "fp") for n in range(20)))
    states = Counter(claim.state for claim in claims)
    [holder] = [claim for claim in claims if claim.state is ClaimState.ACQUIRED]
    holder_store = stores[claims.index(holder) % 2]
    completed = await holder_store.complete(holder, {"redemption_id": "rd_1"})
    replays = await asyncio.gather(*(store.claim("alice", "cmid-1", "fp") for store in stores))
    conflict = await stores[1].claim("alice", "cmid-1", "another-request")

    assert states == {ClaimState.ACQUIRED: 1, ClaimState.IN_PROGRESS: 19}
    assert completed is True
    assert [(claim.state, claim.payload) for claim in replays] == [(ClaimState.DONE, {"redemption_id": "rd_1"})] * 2
    assert conflict.state is ClaimState.CONFLICT


async def test_given_a_holder_whose_lease_lapsed_then_one_process_takes_it_over_and_the_old_holder_cannot_finish(
    engines: Callable[[], AsyncEngine],  # noqa: F811
) -> None:
    now = [1_700_000_000.0]
    stores = [IdempotencyStore(engines(), ttl_seconds=86_400, lease_seconds=5, clock=lambda: now[0]) for _ in range(4)]
    for store in stores:
        await store.start()
    first = await stores[0].claim("bob", "cmid-2", "fp")
    assert await stores[0].record_request(first, {"reward_id": "rw_1"})

    now[0] += 6  # the first holder died mid-flight; four processes notice at once
    takeovers = await asyncio.gather(*(store.claim("bob", "cmid-2", "fp") for store in stores))
    [taker] = [claim for claim in takeovers if claim.state is ClaimState.ACQUIRED]
    late = await stores[0].complete(first, {"redemption_id": "rd_stale"})
    done = await stores[takeovers.index(taker)].complete(taker, {"redemption_id": "rd_2"})
    replay = await stores[0].claim("bob", "cmid-2", "fp")

    assert sorted(claim.state.value for claim in takeovers) == ["acquired"] + ["in_progress"] * 3
    assert taker.request == {"reward_id": "rw_1"}  # the takeover resends what the first holder recorded
    assert (late, done) == (False, True)
    assert (replay.state, replay.payload) == (ClaimState.DONE, {"redemption_id": "rd_2"})
