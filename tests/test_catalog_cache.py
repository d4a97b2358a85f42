"""CatalogCache against a real SandboxProvider (SQLite in tmp_path), with a hand-driven clock.

The provider's fault injection is the only stand-in: no mocks. Each test reads the
sandbox's call counts or the catalog the cache hands back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import pytest

from providers import EventHub, Reward, RewardAvailability, RewardPage
from providers.sandbox import SandboxConfig, SandboxProvider
from resolvers.catalog_cache import CatalogCache, CatalogSnapshot
from resolvers.errors import ProviderDown
from resolvers.pricing import Pricing

pytestmark = pytest.mark.anyio

CATALOG_SIZE = 520  # the sandbox's default catalog
RATES = {"USD": Decimal("100"), "CAD": Decimal("75"), "GBP": Decimal("125"), "EUR": Decimal("110"), "AUD": Decimal("65")}
STABLE_TTL = 600.0
VOLATILE_TTL = 30.0
MAX_STALE = 3600.0
RETRY_AFTER = 5.0
PAGE_SIZE = 100
WALK = math.ceil(CATALOG_SIZE / PAGE_SIZE)  # list_rewards calls in one walk


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[SandboxProvider]:
    sandbox = SandboxProvider(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'sandbox.db'}",
        events=EventHub(),
        config=SandboxConfig(fulfilment_delay=3600.0),
    )
    await sandbox.start()
    try:
        yield sandbox
    finally:
        await sandbox.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_cache(
    provider: SandboxProvider,
    clock: Clock,
    *,
    stable_ttl: float = STABLE_TTL,
    volatile_ttl: float = VOLATILE_TTL,
    max_stale: float = MAX_STALE,
    page_size: int = PAGE_SIZE,
    retry_after: float = RETRY_AFTER,
) -> CatalogCache:
    return CatalogCache(
        provider,
        Pricing(RATES),
        stable_ttl=stable_ttl,
        volatile_ttl=volatile_ttl,
        max_stale=max_stale,
        page_size=page_size,
        retry_after=retry_after,
        timer=clock,
    )


async def warm(cache: CatalogCache, provider: SandboxProvider) -> CatalogSnapshot:
    """The first catalog, with the provider's call counts cleared afterwards."""
    snapshot = await cache.get()
    provider.calls.reset()
    return snapshot


def available_reward(provider: SandboxProvider) -> Reward:
    return next(r for r in provider.catalog if r.availability is RewardAvailability.AVAILABLE)


def change_at_provider(provider: SandboxProvider, reward_id: str, change: Callable[[Reward], Reward]) -> None:
    """The provider's own data changes (a rename, a new price), as a real provider's does."""
    provider.catalog = tuple(change(r) if r.id == reward_id else r for r in provider.catalog)


def renamed(reward: Reward) -> Reward:
    return dataclasses.replace(reward, name=f"{reward.name} (renamed)")


def repriced(reward: Reward) -> Reward:
    d = reward.denomination
    cheaper = dataclasses.replace(d, face_values=tuple(v / 2 for v in d.face_values), min_value=d.min_value / 2)
    return dataclasses.replace(reward, denomination=cheaper)


# Walking the provider


@pytest.mark.parametrize("page_size", [7, 52, 100])
async def test_given_a_cold_cache_when_read_then_the_catalog_is_fetched_page_by_page(
    provider: SandboxProvider, clock: Clock, page_size: int
) -> None:
    cache = make_cache(provider, clock, page_size=page_size)

    snapshot = await cache.get()

    assert len(snapshot.rewards) == CATALOG_SIZE
    assert provider.calls.get("list_rewards") == math.ceil(CATALOG_SIZE / page_size)


async def test_given_a_cold_cache_when_50_requests_read_at_once_then_the_provider_is_walked_once(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    provider.faults.latency = 0.01  # the walk spans many loop turns, so the reads really overlap

    snapshots = await asyncio.gather(*(cache.get() for _ in range(50)))

    assert provider.calls.get("list_rewards") == WALK
    assert all(snapshot is snapshots[0] for snapshot in snapshots)


async def test_given_a_warm_cache_when_read_within_both_ttls_then_the_provider_is_not_asked(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    await warm(cache, provider)
    clock.advance(VOLATILE_TTL - 1)

    await cache.get()

    assert provider.calls.get("list_rewards") == 0


# Separate clocks for volatile and stable data


async def test_given_availability_changed_at_the_provider_when_read_before_the_volatile_ttl_then_the_cached_one_is_served(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    reward = available_reward(provider)
    await warm(cache, provider)
    provider.set_availability(reward.id, RewardAvailability.OUT_OF_STOCK)
    clock.advance(VOLATILE_TTL - 1)

    snapshot = await cache.get()

    assert snapshot.by_id[reward.id].availability is RewardAvailability.AVAILABLE


@pytest.mark.parametrize("volatile_ttl", [5.0, 30.0])
async def test_given_availability_changed_at_the_provider_when_the_volatile_ttl_passes_then_the_new_availability_is_served(
    provider: SandboxProvider, clock: Clock, volatile_ttl: float
) -> None:
    cache = make_cache(provider, clock, volatile_ttl=volatile_ttl)
    reward = available_reward(provider)
    await warm(cache, provider)
    provider.set_availability(reward.id, RewardAvailability.OUT_OF_STOCK)
    clock.advance(volatile_ttl)

    snapshot = await cache.get()

    assert snapshot.by_id[reward.id].availability is RewardAvailability.OUT_OF_STOCK


async def test_given_the_volatile_ttl_passed_when_read_then_the_refetch_is_one_paged_walk(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    await warm(cache, provider)
    clock.advance(VOLATILE_TTL)

    await cache.get()

    assert provider.calls.get("list_rewards") == WALK


async def test_given_a_price_changed_at_the_provider_when_the_volatile_ttl_passes_then_the_new_point_cost_is_served(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    reward = available_reward(provider)
    before = (await warm(cache, provider)).point_costs[reward.id]
    change_at_provider(provider, reward.id, repriced)
    clock.advance(VOLATILE_TTL)

    snapshot = await cache.get()

    assert snapshot.point_costs[reward.id] == math.ceil(before / 2)


async def test_given_a_name_changed_at_the_provider_when_only_the_volatile_ttl_passes_then_the_cached_name_is_kept(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    reward = available_reward(provider)
    await warm(cache, provider)
    change_at_provider(provider, reward.id, renamed)
    clock.advance(VOLATILE_TTL)

    snapshot = await cache.get()

    assert snapshot.by_id[reward.id].name == reward.name


@pytest.mark.parametrize(("stable_ttl", "volatile_ttl"), [(120.0, 30.0), (600.0, 30.0), (10.0, 60.0)])
async def test_given_a_name_changed_at_the_provider_when_the_stable_ttl_passes_then_the_catalog_is_rebuilt(
    provider: SandboxProvider, clock: Clock, stable_ttl: float, volatile_ttl: float
) -> None:
    cache = make_cache(provider, clock, stable_ttl=stable_ttl, volatile_ttl=volatile_ttl)
    reward = available_reward(provider)
    await warm(cache, provider)
    change_at_provider(provider, reward.id, renamed)
    clock.advance(stable_ttl)

    snapshot = await cache.get()

    assert snapshot.by_id[reward.id].name == renamed(reward).name


def card(reward: Reward, point_cost: int) -> tuple[RewardAvailability, int]:
    """What the API layer might build from a reward: here, the two volatile facts."""
    return reward.availability, point_cost


async def test_given_api_objects_kept_in_a_snapshot_when_the_volatile_data_changes_then_the_new_snapshot_builds_fresh_ones(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    reward = available_reward(provider)
    first = await warm(cache, provider)
    first.view(first.by_id[reward.id], card)
    provider.set_availability(reward.id, RewardAvailability.OUT_OF_STOCK)
    clock.advance(VOLATILE_TTL)

    snapshot = await cache.get()

    assert snapshot.view(snapshot.by_id[reward.id], card)[0] is RewardAvailability.OUT_OF_STOCK


# Provider failures


async def test_given_a_warm_cache_when_the_provider_fails_the_refresh_then_the_stale_catalog_is_served(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    first = await warm(cache, provider)
    clock.advance(VOLATILE_TTL)
    provider.faults.fail_next("list_rewards")

    snapshot = await cache.get()

    assert snapshot is first


async def test_given_a_failing_provider_when_the_catalog_is_almost_max_stale_then_it_is_still_served(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    first = await warm(cache, provider)
    provider.faults.failure_rate = 1.0
    clock.advance(MAX_STALE - 1)

    snapshot = await cache.get()

    assert snapshot is first


async def test_given_a_failing_provider_when_the_catalog_is_older_than_max_stale_then_provider_down_is_raised(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    await warm(cache, provider)
    provider.faults.failure_rate = 1.0
    clock.advance(MAX_STALE + 1)

    with pytest.raises(ProviderDown):
        await cache.get()


async def test_given_a_cold_cache_when_the_provider_fails_then_provider_down_is_raised(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    provider.faults.failure_rate = 1.0

    with pytest.raises(ProviderDown):
        await cache.get()


async def test_given_a_cold_cache_that_failed_when_the_provider_recovers_then_the_next_read_fetches_the_catalog(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    provider.faults.fail_next("list_rewards")
    with pytest.raises(ProviderDown):
        await cache.get()

    snapshot = await cache.get()

    assert len(snapshot.rewards) == CATALOG_SIZE


async def test_given_a_failed_refresh_when_read_again_within_retry_after_then_the_failing_provider_is_not_asked(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    await warm(cache, provider)
    clock.advance(VOLATILE_TTL)
    provider.faults.failure_rate = 1.0
    await cache.get()  # fails, serves stale
    provider.calls.reset()
    clock.advance(RETRY_AFTER - 1)

    await cache.get()

    assert provider.calls.get("list_rewards") == 0


async def test_given_a_failed_refresh_when_retry_after_passes_and_the_provider_recovered_then_fresh_data_is_served(
    provider: SandboxProvider, clock: Clock
) -> None:
    cache = make_cache(provider, clock)
    reward = available_reward(provider)
    await warm(cache, provider)
    clock.advance(VOLATILE_TTL)
    provider.faults.fail_next("list_rewards")
    await cache.get()  # fails, serves stale
    provider.set_availability(reward.id, RewardAvailability.DISCONTINUED)
    clock.advance(RETRY_AFTER)

    snapshot = await cache.get()

    assert snapshot.by_id[reward.id].availability is RewardAvailability.DISCONTINUED


# Invalidation (a provider's catalog.item_changed webhook)


class HeldPages:
    """The sandbox as the cache sees it, with one knob: hold the next walk after its first page.

    The walk has then read the first page, as the provider had it, and waits for the rest; the test
    changes the provider and invalidates meanwhile, then lets the walk finish.
    """

    def __init__(self, sandbox: SandboxProvider) -> None:
        self._sandbox = sandbox
        self._armed = False
        self.holding = asyncio.Event()  # the held walk waits for its second page
        self.release = asyncio.Event()

    def hold_next_walk(self) -> None:
        self._armed = True

    async def list_rewards(self, *, cursor: str | None, limit: int) -> RewardPage:
        if cursor is not None and self._armed:
            self._armed = False
            self.holding.set()
            await self.release.wait()
        return await self._sandbox.list_rewards(cursor=cursor, limit=limit)


async def test_given_a_walk_under_way_when_the_catalog_is_invalidated_then_the_next_reads_show_the_change(
    provider: SandboxProvider, clock: Clock
) -> None:
    held = HeldPages(provider)
    cache = make_cache(held, clock)  # type: ignore[arg-type]  # list_rewards is all the cache asks
    reward = next(r for r in provider.catalog[:PAGE_SIZE] if r.availability is RewardAvailability.AVAILABLE)
    held.hold_next_walk()
    before = asyncio.ensure_future(cache.get())
    await held.holding.wait()  # the first page, with the reward AVAILABLE, is read

    provider.set_availability(reward.id, RewardAvailability.OUT_OF_STOCK)
    cache.invalidate()
    after = asyncio.ensure_future(cache.get())
    held.release.set()
    await before
    right_after = await after
    later = await cache.get()  # within both TTLs: whatever the cache kept

    assert right_after.by_id[reward.id].availability is RewardAvailability.OUT_OF_STOCK
    assert later.by_id[reward.id].availability is RewardAvailability.OUT_OF_STOCK


async def test_given_a_walk_under_way_that_then_fails_when_the_catalog_was_invalidated_then_the_next_read_asks_again(
    provider: SandboxProvider, clock: Clock
) -> None:
    held = HeldPages(provider)
    cache = make_cache(held, clock)  # type: ignore[arg-type]
    await warm(cache, provider)
    reward = next(r for r in provider.catalog[:PAGE_SIZE] if r.availability is RewardAvailability.AVAILABLE)
    clock.advance(VOLATILE_TTL)
    held.hold_next_walk()
    outdated = asyncio.ensure_future(cache.get())
    await held.holding.wait()
    provider.set_availability(reward.id, RewardAvailability.OUT_OF_STOCK)
    cache.invalidate()

    provider.faults.fail_next("list_rewards")  # the outdated walk's next page fails
    held.release.set()
    await outdated  # served the stale catalog
    snapshot = await cache.get()

    assert snapshot.by_id[reward.id].availability is RewardAvailability.OUT_OF_STOCK
