"""Strawberry types of the public API; each wraps a provider object and resolves thinly."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Generic, TypeVar

import strawberry
from strawberry.types import Info

import providers
from resolvers.context import RequestContext
from resolvers.errors import ProviderDown
from resolvers.ids import encode_global_id


@strawberry.enum(description="Whether a reward can be redeemed now.")
class RewardAvailability(enum.Enum):
    AVAILABLE = "AVAILABLE"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    DISCONTINUED = "DISCONTINUED"


@strawberry.enum(description="FIXED: only the listed face values. VARIABLE: any value in the range.")
class DenominationKind(enum.Enum):
    FIXED = "FIXED"
    VARIABLE = "VARIABLE"


@strawberry.enum
class TransactionKind(enum.Enum):
    EARN = "EARN"
    REDEEM = "REDEEM"
    REFUND = "REFUND"
    ADJUSTMENT = "ADJUSTMENT"


@strawberry.enum
class RedemptionStatus(enum.Enum):
    PENDING = "PENDING"
    FULFILLED = "FULFILLED"
    FAILED = "FAILED"


@strawberry.interface(description="An object with a global id that `node(id:)` refetches.")
class Node:
    id: strawberry.ID


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type(description="An amount of money in one currency.")
class Money:
    amount: Decimal
    currency_code: str = strawberry.field(description="ISO 4217 code.")


@strawberry.type
class Denomination:
    kind: DenominationKind
    face_values: list[Money] = strawberry.field(
        description="FIXED: every allowed face value, ascending. VARIABLE: empty."
    )
    min_value: Money
    max_value: Money

    @classmethod
    def from_domain(cls, d: providers.Denomination, currency: str) -> Denomination:
        return cls(
            kind=DenominationKind(d.kind.value),
            face_values=[Money(amount=v, currency_code=currency) for v in d.face_values],
            min_value=Money(amount=d.min_value, currency_code=currency),
            max_value=Money(amount=d.max_value, currency_code=currency),
        )


@strawberry.type(description="A gift card or other reward that points can buy.")
class Reward(Node):
    id: strawberry.ID
    name: str
    brand: str
    description: str
    category: str
    image_url: str
    countries: list[str] = strawberry.field(description="ISO 3166-1 alpha-2 codes.")
    currency_code: str = strawberry.field(description="ISO 4217 code.")
    point_cost: int = strawberry.field(description="Points for denomination.minValue.")
    availability: RewardAvailability
    terms: str | None
    redemption_instructions: str | None
    # Plain data, built once with the object: catalog pages serve cached Reward objects,
    # so no field of a reward (bar pointCostFor, which takes an argument) runs a resolver.
    denomination: Denomination
    _reward: strawberry.Private[providers.Reward]

    @strawberry.field(description="Points for that face value; null when it cannot be redeemed.")
    def point_cost_for(self, info: Info[RequestContext, None], face_value: Decimal) -> int | None:
        return info.context.services.pricing.point_cost_for(self._reward, face_value)

    @classmethod
    def from_domain(cls, r: providers.Reward, point_cost: int) -> Reward:
        return cls(
            id=strawberry.ID(encode_global_id("Reward", r.id)),
            name=r.name,
            brand=r.brand,
            description=r.description,
            category=r.category,
            image_url=r.image_url,
            countries=list(r.countries),
            currency_code=r.currency_code,
            point_cost=point_cost,
            availability=RewardAvailability(r.availability.value),
            terms=r.terms,
            redemption_instructions=r.redemption_instructions,
            denomination=Denomination.from_domain(r.denomination, r.currency_code),
            _reward=r,
        )


@strawberry.type
class PointBalance:
    available: int
    pending: int = strawberry.field(description="Points debited for redemptions not settled yet.")
    updated_at: datetime

    @classmethod
    def from_domain(cls, b: providers.Balance) -> PointBalance:
        return cls(available=b.available, pending=b.pending, updated_at=b.updated_at)


@strawberry.type(description="A gift card; its secrets are shown to its owner only.")
class GiftCard:
    code: str | None
    pin: str | None
    claim_url: str | None
    expires_at: datetime | None


@strawberry.type
class Redemption(Node):
    id: strawberry.ID
    face_value: Money
    points: int
    status: RedemptionStatus
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    _redemption: strawberry.Private[providers.Redemption]

    @strawberry.field
    async def reward(self, info: Info[RequestContext, None]) -> Reward:
        from schema.resolve import load_reward

        reward = await load_reward(info.context, self._redemption.reward_id)
        if reward is None:
            raise ProviderDown("This redemption's reward is no longer offered by the provider.")
        return reward

    @strawberry.field(description="Set once FULFILLED; only its owner can ever see it.")
    def gift_card(self, info: Info[RequestContext, None]) -> GiftCard | None:
        card = self._redemption.gift_card
        if card is None or info.context.user_id != self._redemption.user_id:
            return None
        return GiftCard(code=card.code, pin=card.pin, claim_url=card.claim_url, expires_at=card.expires_at)

    @classmethod
    def from_domain(cls, r: providers.Redemption) -> Redemption:
        return cls(
            id=strawberry.ID(encode_global_id("Redemption", r.id)),
            face_value=Money(amount=r.face_value, currency_code=r.currency_code),
            points=r.points,
            status=RedemptionStatus(r.status.value),
            failure_reason=r.failure_reason,
            created_at=r.created_at,
            updated_at=r.updated_at,
            _redemption=r,
        )


@strawberry.type
class Transaction(Node):
    id: strawberry.ID
    kind: TransactionKind
    points: int = strawberry.field(description="Signed: a REDEEM is negative.")
    balance_after: int
    description: str
    created_at: datetime
    _transaction: strawberry.Private[providers.Transaction]

    @strawberry.field(description="Set for REDEEM and REFUND.")
    async def redemption(self, info: Info[RequestContext, None]) -> Redemption | None:
        redemption_id = self._transaction.redemption_id
        if redemption_id is None:
            return None
        found = await info.context.loaders.redemptions.load(redemption_id)
        return None if found is None else Redemption.from_domain(found)

    @classmethod
    def from_domain(cls, t: providers.Transaction) -> Transaction:
        return cls(
            id=strawberry.ID(encode_global_id("Transaction", t.id)),
            kind=TransactionKind(t.kind.value),
            points=t.points,
            balance_after=t.balance_after,
            description=t.description,
            created_at=t.created_at,
            _transaction=t,
        )


NodeT = TypeVar("NodeT")


@strawberry.type
class Edge(Generic[NodeT]):
    """Named <Node>Edge in the schema (RewardEdge, TransactionEdge)."""

    cursor: str
    node: NodeT


@strawberry.type
class Connection(Generic[NodeT]):
    """A Relay connection, named <Node>Connection in the schema."""

    edges: list[Edge[NodeT]]
    page_info: PageInfo
    total_count: int

    @strawberry.field
    def nodes(self) -> list[NodeT]:
        return [edge.node for edge in self.edges]


RewardConnection = Connection[Reward]
TransactionConnection = Connection[Transaction]


@strawberry.input
class CatalogFilter:
    search: str | None = strawberry.field(
        default=None, description="Case-insensitive, over name, brand and description."
    )
    category: str | None = None
    brand: str | None = None
    country: str | None = None
    currency_code: str | None = None
    availability: list[RewardAvailability] | None = None
    max_point_cost: int | None = strawberry.field(default=None, description="pointCost <= this.")


@strawberry.enum
class CatalogSort(enum.Enum):
    NAME = "NAME"
    POINT_COST_ASC = "POINT_COST_ASC"
    POINT_COST_DESC = "POINT_COST_DESC"


KindsArg = Annotated[list[TransactionKind] | None, strawberry.argument(description="Only these kinds.")]
