"""The provider port: the data a reward provider deals in and the calls it answers.

Adapters (the embedded sandbox now, REST providers later) implement
`RewardsProvider`; the layers above depend on nothing else.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol


class RewardAvailability(enum.Enum):
    AVAILABLE = "AVAILABLE"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    DISCONTINUED = "DISCONTINUED"


class DenominationKind(enum.Enum):
    FIXED = "FIXED"
    VARIABLE = "VARIABLE"


class TransactionKind(enum.Enum):
    EARN = "EARN"
    REDEEM = "REDEEM"
    REFUND = "REFUND"
    ADJUSTMENT = "ADJUSTMENT"


class RedemptionStatus(enum.Enum):
    PENDING = "PENDING"
    FULFILLED = "FULFILLED"
    FAILED = "FAILED"


@dataclass(frozen=True, slots=True)
class Denomination:
    kind: DenominationKind
    face_values: tuple[Decimal, ...]  # FIXED: ascending allowed values; VARIABLE: empty
    min_value: Decimal
    max_value: Decimal

    def allows(self, face_value: Decimal) -> bool:
        if self.kind is DenominationKind.FIXED:
            return face_value in self.face_values
        return self.min_value <= face_value <= self.max_value


@dataclass(frozen=True, slots=True)
class Reward:
    id: str
    name: str
    brand: str
    description: str
    category: str
    image_url: str
    countries: tuple[str, ...]
    currency_code: str
    denomination: Denomination
    availability: RewardAvailability
    terms: str | None = None
    redemption_instructions: str | None = None
    # The provider takes only whole amounts (Tango's isWholeAmountValueRequired): 25 but not 25.50.
    whole_amounts_only: bool = False


@dataclass(frozen=True, slots=True)
class RewardPage:
    items: tuple[Reward, ...]
    next_cursor: str | None  # pass back to list_rewards for the next page; None at the end


@dataclass(frozen=True, slots=True)
class Balance:
    user_id: str
    available: int
    pending: int  # points debited for redemptions that have not settled yet
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class GiftCard:
    code: str | None
    pin: str | None
    claim_url: str | None
    expires_at: datetime | None

    def __repr__(self) -> str:  # never let a secret reach a log line through repr()
        return "GiftCard(<redacted>)"


@dataclass(frozen=True, slots=True)
class Redemption:
    id: str
    user_id: str
    reward_id: str
    face_value: Decimal
    currency_code: str
    points: int
    status: RedemptionStatus
    gift_card: GiftCard | None
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Transaction:
    id: str
    position: int  # strictly increasing per provider: the keyset for "newest first"
    user_id: str
    kind: TransactionKind
    points: int  # signed: a REDEEM is negative
    balance_after: int
    description: str
    created_at: datetime
    redemption_id: str | None = None


@dataclass(frozen=True, slots=True)
class TransactionPage:
    items: tuple[Transaction, ...]  # newest first
    total_count: int  # of the user's transactions matching the kinds, ignoring the window
    has_more: bool  # more items exist beyond `limit` in the direction read


@dataclass(frozen=True, slots=True)
class RedeemRequest:
    user_id: str
    reward_id: str
    face_value: Decimal
    points: int
    idempotency_key: str  # the same key on every attempt; a replay returns the first result


@dataclass(frozen=True, slots=True)
class RedeemResult:
    redemption: Redemption
    balance: Balance
    replayed: bool = False


@dataclass(slots=True)
class CallCounts:
    """How many times each port operation was called: lets tests prove batching."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, operation: str) -> None:
        self.counts[operation] = self.counts.get(operation, 0) + 1

    def get(self, operation: str) -> int:
        return self.counts.get(operation, 0)

    def reset(self) -> None:
        self.counts.clear()


class RewardsProvider(Protocol):
    """What giftgraph needs from a reward provider. Every method may raise ProviderError."""

    name: str

    async def start(self) -> None:
        """Open connections and resume background work (e.g. pending fulfilments)."""

    async def aclose(self) -> None:
        """Release everything start() opened."""

    async def check(self) -> None:
        """Raise ProviderUnavailable unless the provider answers."""

    async def list_rewards(self, *, cursor: str | None, limit: int) -> RewardPage:
        """One page of the catalog, in the provider's stable order."""

    async def get_rewards(self, ids: Sequence[str]) -> list[Reward | None]:
        """Rewards by id, live (not cached), in the order asked; None where unknown."""

    async def get_balances(self, user_ids: Sequence[str]) -> list[Balance]:
        """Balances in the order asked; a user seen for the first time is enrolled."""

    async def list_transactions(
        self,
        user_id: str,
        *,
        kinds: frozenset[TransactionKind] | None,
        older_than: int | None,
        newer_than: int | None,
        limit: int,
        from_oldest: bool = False,
    ) -> TransactionPage:
        """The user's transactions strictly between the positions, newest first.

        `from_oldest` takes the `limit` items nearest `newer_than` instead of the
        newest ones (backward pagination); the page is still returned newest first.
        """

    async def get_transactions(self, ids: Sequence[str]) -> list[Transaction | None]:
        """Transactions by id in the order asked; None where unknown."""

    async def get_redemptions(self, ids: Sequence[str]) -> list[Redemption | None]:
        """Redemptions by id in the order asked; None where unknown."""

    async def redeem(self, request: RedeemRequest) -> RedeemResult:
        """Debit the points and order the reward, exactly once per idempotency key."""
