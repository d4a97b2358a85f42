"""The provider port and its adapters.

Everything above this package (resolvers, schema, the app) talks to reward
providers only through `RewardsProvider`; nothing here imports Strawberry or
Starlette.
"""

from providers.base import (
    Balance,
    Denomination,
    DenominationKind,
    GiftCard,
    RedeemRequest,
    RedeemResult,
    Redemption,
    RedemptionStatus,
    Reward,
    RewardAvailability,
    RewardPage,
    RewardsProvider,
    Transaction,
    TransactionKind,
    TransactionPage,
)
from providers.events import BalanceChanged, EventHub, ProviderEvent, RedemptionUpdated

__all__ = [
    "Balance",
    "BalanceChanged",
    "Denomination",
    "DenominationKind",
    "EventHub",
    "GiftCard",
    "ProviderEvent",
    "RedeemRequest",
    "RedeemResult",
    "Redemption",
    "RedemptionStatus",
    "RedemptionUpdated",
    "Reward",
    "RewardAvailability",
    "RewardPage",
    "RewardsProvider",
    "Transaction",
    "TransactionKind",
    "TransactionPage",
]
