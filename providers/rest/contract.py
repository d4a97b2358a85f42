"""The wire format of the REST provider contract: what `giftgraph sandbox serve` answers and `RestProvider` reads.

One pydantic model per JSON shape, each converting to or from the port's dataclasses. The
service serialises with them; the adapter validates every response with them, so a body of
the wrong shape becomes a provider error instead of reaching a client. Unknown fields are
ignored (providers add fields); amounts travel as decimal strings, times as ISO 8601. Point counts
fit GraphQL's Int (32 bits, signed): a larger one could not be answered to a client.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, PlainSerializer

from providers import base

# Decimals as strings on the wire ("25.00"), never floats.
Money = Annotated[Decimal, PlainSerializer(lambda value: str(value), return_type=str, when_used="json")]
Id = Annotated[str, Field(min_length=1, max_length=255)]
MIN_INT, MAX_INT = -(2**31), 2**31 - 1  # GraphQL's Int
Points = Annotated[int, Field(ge=MIN_INT, le=MAX_INT)]  # signed: a REDEEM transaction is negative
Count = Annotated[int, Field(ge=0, le=MAX_INT)]
PositivePoints = Annotated[int, Field(gt=0, le=MAX_INT)]
Position = Annotated[int, Field(ge=0, le=2**63 - 1)]  # a keyset the provider is asked for again: SQL's BIGINT

API_PREFIX = "/v1"
IDEMPOTENCY_HEADER = "Idempotency-Key"
MAX_BATCH = 100  # ids per batch lookup
MAX_PAGE = 100  # items per page


class Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class DenominationWire(Wire):
    kind: Literal["FIXED", "VARIABLE"]
    face_values: list[Money]
    min_value: Money
    max_value: Money


class RewardWire(Wire):
    id: Id
    name: str
    brand: str
    description: str
    category: str
    image_url: str
    countries: list[str]
    currency_code: Annotated[str, Field(min_length=3, max_length=3)]
    denomination: DenominationWire
    availability: Literal["AVAILABLE", "OUT_OF_STOCK", "DISCONTINUED"]
    terms: str | None = None
    redemption_instructions: str | None = None

    @classmethod
    def of(cls, reward: base.Reward) -> RewardWire:
        d = reward.denomination
        return cls(
            id=reward.id,
            name=reward.name,
            brand=reward.brand,
            description=reward.description,
            category=reward.category,
            image_url=reward.image_url,
            countries=list(reward.countries),
            currency_code=reward.currency_code,
            denomination=DenominationWire(
                kind=d.kind.value, face_values=list(d.face_values), min_value=d.min_value, max_value=d.max_value
            ),
            availability=reward.availability.value,
            terms=reward.terms,
            redemption_instructions=reward.redemption_instructions,
        )

    def to_domain(self) -> base.Reward:
        d = self.denomination
        return base.Reward(
            id=self.id,
            name=self.name,
            brand=self.brand,
            description=self.description,
            category=self.category,
            image_url=self.image_url,
            countries=tuple(self.countries),
            currency_code=self.currency_code,
            denomination=base.Denomination(
                kind=base.DenominationKind(d.kind),
                face_values=tuple(d.face_values),
                min_value=d.min_value,
                max_value=d.max_value,
            ),
            availability=base.RewardAvailability(self.availability),
            terms=self.terms,
            redemption_instructions=self.redemption_instructions,
        )


class BalanceWire(Wire):
    user_id: Id
    available: Points
    pending: Count
    updated_at: AwareDatetime

    @classmethod
    def of(cls, balance: base.Balance) -> BalanceWire:
        return cls(
            user_id=balance.user_id, available=balance.available, pending=balance.pending, updated_at=balance.updated_at
        )

    def to_domain(self) -> base.Balance:
        return base.Balance(
            user_id=self.user_id, available=self.available, pending=self.pending, updated_at=self.updated_at
        )


class GiftCardWire(Wire):
    code: str | None
    pin: str | None
    claim_url: str | None
    expires_at: AwareDatetime | None

    def __repr__(self) -> str:  # never let a card reach a log line through repr()
        return "GiftCardWire(<redacted>)"

    __str__ = __repr__


class RedemptionWire(Wire):
    id: Id
    user_id: Id
    reward_id: Id
    face_value: Money
    currency_code: Annotated[str, Field(min_length=3, max_length=3)]
    points: PositivePoints
    status: Literal["PENDING", "FULFILLED", "FAILED"]
    gift_card: GiftCardWire | None = None
    failure_reason: str | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime

    @classmethod
    def of(cls, redemption: base.Redemption, *, with_card: bool = True) -> RedemptionWire:
        card = redemption.gift_card if with_card else None
        return cls(
            id=redemption.id,
            user_id=redemption.user_id,
            reward_id=redemption.reward_id,
            face_value=redemption.face_value,
            currency_code=redemption.currency_code,
            points=redemption.points,
            status=redemption.status.value,
            gift_card=None
            if card is None
            else GiftCardWire(code=card.code, pin=card.pin, claim_url=card.claim_url, expires_at=card.expires_at),
            failure_reason=redemption.failure_reason,
            created_at=redemption.created_at,
            updated_at=redemption.updated_at,
        )

    def to_domain(self) -> base.Redemption:
        card = self.gift_card
        return base.Redemption(
            id=self.id,
            user_id=self.user_id,
            reward_id=self.reward_id,
            face_value=self.face_value,
            currency_code=self.currency_code,
            points=self.points,
            status=base.RedemptionStatus(self.status),
            gift_card=None
            if card is None
            else base.GiftCard(code=card.code, pin=card.pin, claim_url=card.claim_url, expires_at=card.expires_at),
            failure_reason=self.failure_reason,
            created_at=self.created_at,
            updated_at=self.updated_at,
        )


class TransactionWire(Wire):
    id: Id
    position: Position
    user_id: Id
    kind: Literal["EARN", "REDEEM", "REFUND", "ADJUSTMENT"]
    points: Points
    balance_after: Points
    description: str
    created_at: AwareDatetime
    redemption_id: str | None = None

    @classmethod
    def of(cls, tx: base.Transaction) -> TransactionWire:
        return cls(
            id=tx.id,
            position=tx.position,
            user_id=tx.user_id,
            kind=tx.kind.value,
            points=tx.points,
            balance_after=tx.balance_after,
            description=tx.description,
            created_at=tx.created_at,
            redemption_id=tx.redemption_id,
        )

    def to_domain(self) -> base.Transaction:
        return base.Transaction(
            id=self.id,
            position=self.position,
            user_id=self.user_id,
            kind=base.TransactionKind(self.kind),
            points=self.points,
            balance_after=self.balance_after,
            description=self.description,
            created_at=self.created_at,
            redemption_id=self.redemption_id,
        )


# Response envelopes, one per endpoint (see providers/sandbox/openapi.json)


class RewardPageWire(Wire):  # GET /v1/rewards?cursor=&limit=
    items: list[RewardWire]
    next_cursor: str | None


class RewardBatchWire(Wire):  # GET /v1/rewards/batch?id=a&id=b  (same order, null where unknown)
    items: list[RewardWire | None]


class BalanceBatchWire(Wire):  # GET /v1/balances?user_id=a&user_id=b  (same order)
    items: list[BalanceWire]


class TransactionPageWire(Wire):  # GET /v1/transactions?user_id=&kind=&older_than=&newer_than=&limit=&from_oldest=
    items: list[TransactionWire]
    total_count: Count
    has_more: bool


class TransactionBatchWire(Wire):  # GET /v1/transactions/batch?id=a&id=b
    items: list[TransactionWire | None]


class RedemptionBatchWire(Wire):  # GET /v1/redemptions/batch?id=a&id=b
    items: list[RedemptionWire | None]


class RedeemRequestWire(Wire):  # POST /v1/redemptions, header Idempotency-Key
    user_id: Id
    reward_id: Id
    face_value: Money
    points: Annotated[int, Field(gt=0, le=1_000_000_000)]


class RedeemResultWire(Wire):  # 201 created, 200 replayed
    redemption: RedemptionWire
    balance: BalanceWire
    replayed: bool = False


class TokenWire(Wire):  # POST /oauth/token (RFC 6749 4.4), form grant_type=client_credentials
    access_token: Annotated[str, Field(min_length=1)]
    token_type: str
    expires_in: Annotated[int, Field(gt=0, le=MAX_INT)]


class ErrorDetailWire(Wire):
    code: str
    message: str = ""


class ErrorWire(Wire):  # every 4xx/5xx: {"error": {"code": ..., "message": ...}}
    error: ErrorDetailWire


# Error codes of ErrorWire.error.code, by status
ERROR_CODES: dict[str, int] = {
    "invalid_request": 400,
    "authentication_failed": 401,
    "insufficient_points": 402,
    "forbidden": 403,
    "not_found": 404,
    "reward_not_found": 404,
    "method_not_allowed": 405,
    "idempotency_conflict": 409,
    "reward_unavailable": 422,
    "invalid_face_value": 422,
    "rate_limited": 429,  # with Retry-After (seconds)
    "internal_error": 500,
    "unavailable": 503,
}


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


# Webhook events (Standard Webhooks: the body is {"type", "timestamp", "data"})


class PointsEarnedData(Wire):  # type "points.earned": credited in the provider's ledger
    user_id: Id
    points: PositivePoints
    transaction_id: Id
    balance: BalanceWire


class RedemptionSettledData(Wire):  # "redemption.fulfilled" / "redemption.failed" (refunded): never a card
    redemption: RedemptionWire
    balance: BalanceWire


class CatalogItemChangedData(Wire):  # "catalog.item_changed"
    reward_id: Id
    availability: Literal["AVAILABLE", "OUT_OF_STOCK", "DISCONTINUED"]


WEBHOOK_TYPES = ("points.earned", "redemption.fulfilled", "redemption.failed", "catalog.item_changed")


class WebhookEventWire(Wire):
    type: str
    timestamp: datetime
    data: dict[str, Any]
