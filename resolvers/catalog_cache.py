"""The in-process catalog cache: cachetools TTL entries, one fetch per miss, stale on failure.

Stable data (names, descriptions, images) and volatile data (availability) expire
on separate clocks. Concurrent misses share one provider walk, and when the
provider fails the last good catalog is served up to `max_stale` seconds old.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cachetools import TTLCache

from providers import Reward, RewardAvailability, RewardsProvider
from providers.errors import ProviderError
from resolvers.errors import ProviderDown
from resolvers.pricing import Pricing

logger = logging.getLogger(__name__)

_STABLE, _VOLATILE = "stable", "volatile"


@dataclass(slots=True)
class CatalogSnapshot:
    """One consistent view of the catalog with its sort orders computed once."""

    rewards: tuple[Reward, ...]
    point_costs: Mapping[str, int]
    fetched_at: float
    by_id: dict[str, Reward] = field(init=False)
    _sorted: dict[str, tuple[tuple[Reward, ...], tuple[tuple, ...]]] = field(init=False, default_factory=dict)

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
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self._provider = provider
        self._pricing = pricing
        self._max_stale = max_stale
        self._page_size = page_size
        self._timer = timer
        self._stable: TTLCache[str, tuple[Reward, ...]] = TTLCache(maxsize=1, ttl=stable_ttl, timer=timer)
        self._volatile: TTLCache[str, dict[str, RewardAvailability]] = TTLCache(
            maxsize=1, ttl=volatile_ttl, timer=timer
        )
        self._snapshot: CatalogSnapshot | None = None
        self._refresh: asyncio.Task[CatalogSnapshot] | None = None

    async def get(self) -> CatalogSnapshot:
        """The current catalog, fetching it when an entry has expired."""
        snapshot = self._snapshot
        if snapshot is not None and _STABLE in self._stable and _VOLATILE in self._volatile:
            return snapshot
        if self._refresh is None:
            # Concurrent misses await this one task instead of each walking the provider.
            self._refresh = asyncio.ensure_future(self._fetch())
            self._refresh.add_done_callback(self._forget_refresh)
        try:
            return await asyncio.shield(self._refresh)
        except ProviderError as exc:
            if snapshot is not None and self._timer() - snapshot.fetched_at <= self._max_stale:
                logger.warning("catalog refresh failed; serving stale catalog", extra={"error": type(exc).__name__})
                return snapshot
            raise ProviderDown("The reward catalog is temporarily unavailable.") from exc

    def invalidate(self) -> None:
        self._stable.clear()
        self._volatile.clear()

    def _forget_refresh(self, task: asyncio.Task[CatalogSnapshot]) -> None:
        self._refresh = None
        if not task.cancelled():
            task.exception()  # mark retrieved; callers already saw it

    async def _fetch(self) -> CatalogSnapshot:
        rewards = await self._walk()
        availability = {reward.id: reward.availability for reward in rewards}
        stable = self._stable.get(_STABLE)
        if stable is not None and {r.id for r in stable} == availability.keys():
            # Only the volatile part expired: keep the descriptive data, take the new availability.
            rewards = tuple(
                r if r.availability is availability[r.id] else dataclasses.replace(r, availability=availability[r.id])
                for r in stable
            )
        else:
            self._stable[_STABLE] = rewards
        self._volatile[_VOLATILE] = availability
        costs = {}
        for reward in rewards:
            cost = self._pricing.point_cost(reward)
            if cost is not None:  # a currency without a rate cannot be redeemed: leave it out
                costs[reward.id] = cost
        priced = tuple(reward for reward in rewards if reward.id in costs)
        self._snapshot = CatalogSnapshot(rewards=priced, point_costs=costs, fetched_at=self._timer())
        return self._snapshot

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
