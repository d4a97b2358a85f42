"""Per-request dataloaders: each batches one kind of provider lookup by key.

Created per request (per operation on a WebSocket) and never shared: aiodataloader
binds to the running loop, and a shared cache would leak one user's data to another.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aiodataloader import DataLoader

from providers import RewardsProvider
from providers.errors import ProviderError
from resolvers.errors import ProviderDown


class _ProviderLoader(DataLoader):
    """Batches calls to one provider operation that takes a list of keys."""

    operation: str

    def __init__(self, provider: RewardsProvider) -> None:
        super().__init__()
        self._load = getattr(provider, self.operation)

    async def batch_load_fn(self, keys: Sequence[str]) -> list:
        try:
            return await self._load(list(keys))
        except ProviderError as exc:
            raise ProviderDown("The reward provider is temporarily unavailable.") from exc


class RewardsByIdLoader(_ProviderLoader):
    """Reward | None by reward id (history, redemptions and `nodes`)."""

    operation = "get_rewards"


class RedemptionsByIdLoader(_ProviderLoader):
    """Redemption | None by redemption id."""

    operation = "get_redemptions"


class TransactionsByIdLoader(_ProviderLoader):
    """Transaction | None by transaction id (`node` refetches)."""

    operation = "get_transactions"


class BalancesByUserLoader(_ProviderLoader):
    """Balance by user id."""

    operation = "get_balances"


@dataclass(slots=True)
class Loaders:
    rewards: RewardsByIdLoader
    redemptions: RedemptionsByIdLoader
    transactions: TransactionsByIdLoader
    balances: BalancesByUserLoader

    @classmethod
    def create(cls, provider: RewardsProvider) -> Loaders:
        return cls(
            rewards=RewardsByIdLoader(provider),
            redemptions=RedemptionsByIdLoader(provider),
            transactions=TransactionsByIdLoader(provider),
            balances=BalancesByUserLoader(provider),
        )
