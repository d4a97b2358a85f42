"""The in-process catalog cache: cachetools TTL entries, one walk per miss, stale on failure.

Stable data (names, descriptions, images...) and volatile data (availability, and the
denomination that sets the point cost) expire on separate clocks. The provider port
only lists whole rewards, so every refresh walks the catalog page by page; what the
clocks decide is which part of the walk is taken: a volatile refresh keeps the cached
descriptive data and takes only the new availability and denominations, a stable
refresh rebuilds everything. Concurrent misses share one walk, and when the provider
fails the last good catalog is served up to `max_stale` seconds old, without asking
the failing provider again for `retry_after` seconds. `invalidate()` (a provider's
catalog webhook) also outdates a walk already under way: what it read may predate
the change, so it answers the reads that joined it and is not kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from cachetools import TTLCache

from providers import Reward, RewardsProvider
from providers.errors import ProviderError
from resolvers.errors import ProviderDown
from resolvers.pricing import Pricing

logger = logging.getLogger(__name__)

_STABLE, _VOLATILE = "stable", "volatile"
T = TypeVar("T")


@dataclass(slots=True)
class CatalogSnapshot:
    """One consistent view of the catalog; sort orders and API objects are computed once per snapshot."""

    rewards: tuple[Reward, ...]
    point_costs: Mapping[str, int]
    fetched_at: float
    by_id: dict[str, Reward] = field(init=False)
    _sorted: dict[str, tuple[tuple[Reward, ...], tuple[tuple, ...]]] = field(init=False, default_factory=dict)
    _views: dict[tuple[Any, str], Any] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {reward.id: reward for reward in self.rewards}

    def sorted_by(self, sort: str) -> tuple[tuple[Reward, ...], tuple[tuple, ...]]:
        """Rewards and their keyset keys in `sort` order (NAME, POINT_COST_ASC, POINT_COST_DESC)."""
        cached = self._sorted.get(sort)
        if cached is None:
            key = self.sort_key(sort)
            pairs = sorted(((key(reward), reward) for reward in self.rewards), key=lambda pair: pair[0])
            cached = (tuple(reward for _, reward in pairs), tuple(k for k, _ in pairs))
            self._sorted[sort] = cached
        return cached

    def sort_key(self, sort: str) -> Callable[[Reward], tuple]:
        costs = self.point_costs
        if sort == "NAME":
            return lambda reward: (reward.name.casefold(), reward.id)
        if sort == "POINT_COST_ASC":
            return lambda reward: (costs[reward.id], reward.id)
        if sort == "POINT_COST_DESC":
            return lambda reward: (-costs[reward.id], reward.id)
        raise ValueError(f"unknown sort {sort!r}")

    def view(self, reward: Reward, build: Callable[[Reward, int], T]) -> T:
        """`build(reward, point_cost)`, made once per snapshot and reward.

        The API layer keeps its immutable per-reward objects here, so a catalog page
        does not rebuild fifty of them on every request; a new snapshot starts afresh.
        """
        key = (build, reward.id)
        found = self._views.get(key)
        if found is None:
            found = self._views[key] = build(reward, self.point_costs[reward.id])
        return found


class CatalogCache:
    def __init__(
        self,
        provider: RewardsProvider,
        pricing: Pricing,
        *,
        stable_ttl: float,
        volatile_ttl: float,
        max_stale: float,
        page_size: int = 100,
        retry_after: float = 5.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        self._pricing = pricing
        self._max_stale = max_stale
        self._page_size = page_size
        self._retry_after = retry_after
        self._timer = timer
        # The stable entry holds the rewards of the last full rebuild by id; the volatile entry
        # holds the snapshot: those rewards with the latest availability and denominations.
        # Either expiring means a walk.
        self._stable: TTLCache[str, dict[str, Reward]] = TTLCache(maxsize=1, ttl=stable_ttl, timer=timer)
        self._volatile: TTLCache[str, CatalogSnapshot] = TTLCache(maxsize=1, ttl=volatile_ttl, timer=timer)
        self._last_good: CatalogSnapshot | None = None
        self._retry_at = float("-inf")  # after a failed walk, serve stale data until then
        self._refresh: asyncio.Future[CatalogSnapshot] | None = None
        # Bumped by invalidate(): a walk keeps its result only if no invalidation came while it ran.
        self._generation = 0

    async def get(self) -> CatalogSnapshot:
        """The current catalog, walking the provider when an entry has expired."""
        fresh = self._volatile.get(_VOLATILE)
        if fresh is not None and _STABLE in self._stable:
            return fresh
        stale = self._last_good
        if stale is not None and self._timer() < self._retry_at:
            return self._serve_stale(stale, None)
        refresh = self._refresh
        if refresh is None:
            # Concurrent misses await this one task instead of each walking the provider.
            refresh = self._refresh = asyncio.ensure_future(self._fetch(self._generation))
            refresh.add_done_callback(self._forget_refresh)
        try:
            return await asyncio.shield(refresh)
        except ProviderError as exc:
            if stale is None:
                raise ProviderDown("The reward catalog is temporarily unavailable.") from exc
            return self._serve_stale(stale, exc)

    def invalidate(self) -> None:
        """Forget both clocks and any walk under way: the next get() walks afresh and rebuilds the whole catalog."""
        self._generation += 1
        self._refresh = None  # the walk runs on for the reads that joined it; the next read starts its own
        self._stable.clear()
        self._volatile.clear()
        self._retry_at = float("-inf")

    def _serve_stale(self, stale: CatalogSnapshot, error: ProviderError | None) -> CatalogSnapshot:
        if self._timer() - stale.fetched_at > self._max_stale:
            raise ProviderDown("The reward catalog is temporarily unavailable.") from error
        if error is not None:
            logger.warning("catalog refresh failed; serving stale catalog", extra={"error": type(error).__name__})
        return stale

    def _forget_refresh(self, task: asyncio.Future[CatalogSnapshot]) -> None:
        if self._refresh is task:  # not one that invalidate() let go and a newer walk replaced
            self._refresh = None
        if not task.cancelled():
            task.exception()  # mark retrieved; the callers already saw it

    async def _fetch(self, generation: int) -> CatalogSnapshot:
        try:
            walked = await self._walk()
        except ProviderError:
            if generation == self._generation:  # an outdated walk's failure must not hold the next one back
                self._retry_at = self._timer() + self._retry_after
            raise
        if generation != self._generation:
            # Invalidated while walking: answer the reads that asked before the change, keep nothing.
            return self._snapshot(walked)
        stable = self._stable.get(_STABLE)
        if stable is not None and stable.keys() == {reward.id for reward in walked}:
            # Only the volatile part expired: keep the cached descriptive data.
            rewards = tuple(_with_volatile_of(reward, stable[reward.id]) for reward in walked)
        else:
            rewards = walked
            self._stable[_STABLE] = {reward.id: reward for reward in walked}
        snapshot = self._snapshot(rewards)
        self._volatile[_VOLATILE] = snapshot
        self._last_good = snapshot
        self._retry_at = float("-inf")
        return snapshot

    def _snapshot(self, rewards: tuple[Reward, ...]) -> CatalogSnapshot:
        costs = {}
        for reward in rewards:
            cost = self._pricing.point_cost(reward)
            if cost is not None:  # a currency without a rate cannot be redeemed: leave it out
                costs[reward.id] = cost
        return CatalogSnapshot(
            rewards=tuple(reward for reward in rewards if reward.id in costs),
            point_costs=costs,
            fetched_at=self._timer(),
        )

    async def _walk(self) -> tuple[Reward, ...]:
        """The whole catalog, page by page: never one unbounded request."""
        rewards: list[Reward] = []
        cursor: str | None = None
        while True:
            page = await self._provider.list_rewards(cursor=cursor, limit=self._page_size)
            rewards.extend(page.items)
            if page.next_cursor is None or not page.items:
                return tuple(rewards)
            cursor = page.next_cursor


def _with_volatile_of(fresh: Reward, cached: Reward) -> Reward:
    """The cached reward with the fresh availability and denomination (the volatile fields)."""
    if cached.availability is fresh.availability and cached.denomination == fresh.denomination:
        return cached
    return dataclasses.replace(cached, availability=fresh.availability, denomination=fresh.denomination)
