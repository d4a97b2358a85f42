"""The catalog: filter, sort and page the cached catalog with keyset cursors."""

from __future__ import annotations

from dataclasses import dataclass

from providers import Reward, RewardAvailability
from resolvers.catalog_cache import CatalogSnapshot
from resolvers.pagination import Page, decode_cursor, encode_cursor, slice_sorted, window

SORTS = ("NAME", "POINT_COST_ASC", "POINT_COST_DESC")
_CURSOR_SHAPES = {"NAME": (str, str), "POINT_COST_ASC": (int, str), "POINT_COST_DESC": (int, str)}


@dataclass(frozen=True, slots=True)
class CatalogFilter:
    search: str | None = None
    category: str | None = None
    brand: str | None = None
    country: str | None = None
    currency_code: str | None = None
    availability: frozenset[RewardAvailability] | None = None
    max_point_cost: int | None = None

    def is_empty(self) -> bool:
        return self == _NO_FILTER

    def matches(self, reward: Reward, point_cost: int) -> bool:
        if self.search:
            needle = self.search.casefold()
            if not any(needle in text.casefold() for text in (reward.name, reward.brand, reward.description)):
                return False
        if self.category is not None and reward.category.casefold() != self.category.casefold():
            return False
        if self.brand is not None and reward.brand.casefold() != self.brand.casefold():
            return False
        if self.country is not None and self.country.upper() not in reward.countries:
            return False
        if self.currency_code is not None and reward.currency_code != self.currency_code.upper():
            return False
        if self.availability is not None and reward.availability not in self.availability:
            return False
        return self.max_point_cost is None or point_cost <= self.max_point_cost


_NO_FILTER = CatalogFilter()


def page_catalog(
    snapshot: CatalogSnapshot,
    *,
    first: int | None,
    after: str | None,
    last: int | None,
    before: str | None,
    filter: CatalogFilter,
    sort: str,
) -> Page[Reward]:
    kind = f"catalog:{sort}"
    win = window(
        first=first, after=after, last=last, before=before, decode=lambda c: decode_cursor(kind, c, _CURSOR_SHAPES[sort])
    )
    rewards, keys = snapshot.sorted_by(sort)
    if not filter.is_empty():
        costs = snapshot.point_costs
        kept = [i for i, reward in enumerate(rewards) if filter.matches(reward, costs[reward.id])]
        rewards = [rewards[i] for i in kept]
        keys = [keys[i] for i in kept]
    return slice_sorted(rewards, keys, win, lambda key: encode_cursor(kind, key))

