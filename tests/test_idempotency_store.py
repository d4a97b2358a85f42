"""IdempotencyStore on a real SQLite file: claim, complete, replay, conflict, leases, expiry."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from providers.sql import create_engine
from resolvers.idempotency import ClaimState, IdempotencyStore

pytestmark = pytest.mark.anyio

TTL = 86_400.0
LEASE = 60.0
USER = "user-1"
KEY = "key-1"
FINGERPRINT = "a" * 64
OTHER_FINGERPRINT = "b" * 64
PAYLOAD = {"redemption_id": "rd_1", "balance": {"available": 9000}, "errors": []}


class FakeClock:
    """Wall-clock seconds that only move when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@asynccontextmanager
async def open_store(path: Path, clock: Callable[[], float]) -> AsyncIterator[IdempotencyStore]:
    engine = create_engine(f"sqlite+aiosqlite:///{path}", logging_name="idempotency-test")
    store = IdempotencyStore(engine, ttl_seconds=TTL, lease_seconds=LEASE, clock=clock)
    try:
        await store.start()
        yield store
    finally:
        await engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "giftgraph.db"


@pytest.fixture
async def store(db_path: Path, clock: FakeClock) -> AsyncIterator[IdempotencyStore]:
    async with open_store(db_path, clock) as opened:
        yield opened


# Claim, complete, replay


async def test_given_an_unused_key_when_claimed_then_the_caller_acquires_it(store: IdempotencyStore) -> None:
    claim = await store.claim(USER, KEY, FINGERPRINT)

    assert claim.state is ClaimState.ACQUIRED


async def test_given_a_completed_key_when_claimed_with_the_same_fingerprint_then_the_stored_payload_is_replayed(
    store: IdempotencyStore,
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    await store.complete(claimed, PAYLOAD)

    claim = await store.claim(USER, KEY, FINGERPRINT)

    assert (claim.state, claim.payload) == (ClaimState.DONE, PAYLOAD)


async def test_given_a_completed_key_when_a_new_store_opens_the_same_file_then_the_payload_is_replayed(
    store: IdempotencyStore, db_path: Path, clock: FakeClock
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    await store.complete(claimed, PAYLOAD)

    async with open_store(db_path, clock) as reopened:
        claim = await reopened.claim(USER, KEY, FINGERPRINT)

    assert (claim.state, claim.payload) == (ClaimState.DONE, PAYLOAD)


async def test_given_a_key_claimed_by_one_user_when_another_user_claims_it_then_both_acquire(
    store: IdempotencyStore,
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)

    claim = await store.claim("user-2", KEY, OTHER_FINGERPRINT)

    assert claim.state is ClaimState.ACQUIRED


# Conflict


async def test_given_a_completed_key_when_claimed_with_another_fingerprint_then_it_conflicts(
    store: IdempotencyStore,
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    await store.complete(claimed, PAYLOAD)

    claim = await store.claim(USER, KEY, OTHER_FINGERPRINT)

    assert (claim.state, claim.payload) == (ClaimState.CONFLICT, None)


async def test_given_a_key_in_progress_when_claimed_with_another_fingerprint_then_it_conflicts(
    store: IdempotencyStore,
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)

    claim = await store.claim(USER, KEY, OTHER_FINGERPRINT)

    assert claim.state is ClaimState.CONFLICT


async def test_given_a_conflicting_claim_when_the_original_is_replayed_then_its_payload_is_unchanged(
    store: IdempotencyStore,
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    await store.complete(claimed, PAYLOAD)
    claimed = await store.claim(USER, KEY, OTHER_FINGERPRINT)

    claim = await store.claim(USER, KEY, FINGERPRINT)

    assert (claim.state, claim.payload) == (ClaimState.DONE, PAYLOAD)


# In progress and leases


async def test_given_a_key_in_progress_when_claimed_again_within_the_lease_then_it_is_in_progress(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    clock.advance(LEASE - 1)

    claim = await store.claim(USER, KEY, FINGERPRINT)

    assert claim.state is ClaimState.IN_PROGRESS


async def test_given_a_claim_whose_lease_ran_out_when_claimed_again_then_the_retry_takes_it_over(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    clock.advance(LEASE + 1)

    claim = await store.claim(USER, KEY, FINGERPRINT)

    assert claim.state is ClaimState.ACQUIRED


async def test_given_a_claim_just_taken_over_when_claimed_again_then_the_new_lease_holds_it(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    clock.advance(LEASE + 1)
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    clock.advance(LEASE - 1)

    claim = await store.claim(USER, KEY, FINGERPRINT)

    assert claim.state is ClaimState.IN_PROGRESS


async def test_given_a_claim_whose_lease_ran_out_when_claimed_with_another_fingerprint_then_it_conflicts(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    clock.advance(LEASE + 1)

    claim = await store.claim(USER, KEY, OTHER_FINGERPRINT)

    assert claim.state is ClaimState.CONFLICT


# Release


async def test_given_a_released_claim_when_the_key_is_claimed_with_another_fingerprint_then_it_is_acquired(
    store: IdempotencyStore,
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    await store.release(claimed)

    claim = await store.claim(USER, KEY, OTHER_FINGERPRINT)

    assert claim.state is ClaimState.ACQUIRED


async def test_given_a_completed_key_when_released_then_the_result_is_still_replayed(
    store: IdempotencyStore,
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    await store.complete(claimed, PAYLOAD)
    await store.release(claimed)

    claim = await store.claim(USER, KEY, FINGERPRINT)

    assert (claim.state, claim.payload) == (ClaimState.DONE, PAYLOAD)


# Expiry and purge


async def test_given_a_completed_key_when_the_ttl_has_not_passed_then_it_is_still_replayed(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    await store.complete(claimed, PAYLOAD)
    clock.advance(TTL - 1)

    claim = await store.claim(USER, KEY, FINGERPRINT)

    assert claim.state is ClaimState.DONE


async def test_given_a_key_completed_later_than_claimed_when_the_ttl_from_the_claim_passes_then_it_is_kept(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    clock.advance(30)
    await store.complete(claimed, PAYLOAD)
    clock.advance(TTL - 10)

    claim = await store.claim(USER, KEY, FINGERPRINT)

    assert claim.state is ClaimState.DONE


async def test_given_an_expired_key_when_claimed_with_another_fingerprint_then_it_is_acquired_afresh(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    await store.complete(claimed, PAYLOAD)
    clock.advance(TTL + 1)

    claim = await store.claim(USER, KEY, OTHER_FINGERPRINT)

    assert claim.state is ClaimState.ACQUIRED


async def test_given_expired_and_live_keys_when_purged_then_only_the_expired_results_are_deleted(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    claimed = await store.claim(USER, "old", FINGERPRINT)
    await store.complete(claimed, PAYLOAD)
    clock.advance(TTL + 1)
    claimed = await store.claim(USER, "new", FINGERPRINT)
    await store.complete(claimed, PAYLOAD)

    purged = await store.purge_expired()

    states = {key: (await store.claim(USER, key, OTHER_FINGERPRINT)).state for key in ("old", "new")}
    assert (purged, states) == (1, {"old": ClaimState.ACQUIRED, "new": ClaimState.CONFLICT})


async def test_given_an_unfinished_claim_past_the_ttl_when_purged_then_it_is_kept(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    # An attempt that may have reached the provider must not lose its key to a purge.
    claimed = await store.claim(USER, KEY, FINGERPRINT)
    clock.advance(TTL + 1)

    purged = await store.purge_expired()

    assert (purged, (await store.claim(USER, KEY, OTHER_FINGERPRINT)).state) == (0, ClaimState.CONFLICT)


# Concurrency


async def test_given_twenty_concurrent_claims_of_one_key_then_exactly_one_acquires(store: IdempotencyStore) -> None:
    claims = await asyncio.gather(*(store.claim(USER, KEY, FINGERPRINT) for _ in range(20)))

    assert Counter(claim.state for claim in claims) == {ClaimState.ACQUIRED: 1, ClaimState.IN_PROGRESS: 19}


async def test_given_two_stores_on_one_file_when_they_race_for_a_key_then_exactly_one_acquires(
    store: IdempotencyStore, db_path: Path, clock: FakeClock
) -> None:
    # Two engines on one file stand for two server processes sharing the database.
    async with open_store(db_path, clock) as other:
        claims = await asyncio.gather(
            *(s.claim(USER, KEY, FINGERPRINT) for _ in range(10) for s in (store, other))
        )

    assert Counter(claim.state for claim in claims) == {ClaimState.ACQUIRED: 1, ClaimState.IN_PROGRESS: 19}


async def test_given_a_holder_whose_lease_was_taken_over_when_it_releases_or_completes_then_the_new_holder_keeps_the_key(
    store: IdempotencyStore, clock: FakeClock
) -> None:
    first = await store.claim(USER, KEY, FINGERPRINT)
    clock.advance(LEASE + 1)
    second = await store.claim(USER, KEY, FINGERPRINT)

    await store.release(first)
    completed_by_first = await store.complete(first, {"stale": True})
    held = await store.claim(USER, KEY, FINGERPRINT)
    completed_by_second = await store.complete(second, PAYLOAD)
    replay = await store.claim(USER, KEY, FINGERPRINT)

    assert (first.state, second.state) == (ClaimState.ACQUIRED, ClaimState.ACQUIRED)
    assert completed_by_first is False
    assert held.state is ClaimState.IN_PROGRESS
    assert completed_by_second is True
    assert (replay.state, replay.payload) == (ClaimState.DONE, PAYLOAD)
