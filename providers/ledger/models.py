"""What the points ledger's operations return, and the reward snapshot kept with each redemption."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

from providers.base import Balance, Denomination, DenominationKind, Redemption, Reward, RewardAvailability, Transaction


@dataclass(frozen=True, slots=True)
class GrantResult:
    transaction: Transaction
    balance: Balance


@dataclass(frozen=True, slots=True)
class ReserveResult:
    redemption: Redemption
    balance: Balance
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class SettleResult:
    redemption: Redemption
    balance: Balance


@dataclass(frozen=True, slots=True)
class Unsettled:
    """A PENDING redemption due for a look-up at the provider (the reconciler's work)."""

    redemption_id: str
    user_id: str
    reference: str
    reward_id: str
    face_value: Decimal
    currency_code: str
    order_id: str | None
    attempts: int


def dump_reward(reward: Reward) -> str:
    denomination = reward.denomination
    return json.dumps(
        {
            "id": reward.id,
            "name": reward.name,
            "brand": reward.brand,
            "description": reward.description,
            "category": reward.category,
            "image_url": reward.image_url,
            "countries": list(reward.countries),
            "currency_code": reward.currency_code,
            "denomination": {
                "kind": denomination.kind.value,
                "face_values": [str(value) for value in denomination.face_values],
                "min_value": str(denomination.min_value),
                "max_value": str(denomination.max_value),
            },
            "availability": reward.availability.value,
            "terms": reward.terms,
            "redemption_instructions": reward.redemption_instructions,
        },
        separators=(",", ":"),
    )


def load_reward(snapshot: str) -> Reward:
    data = json.loads(snapshot)
    denomination = data["denomination"]
    return Reward(
        id=data["id"],
        name=data["name"],
        brand=data["brand"],
        description=data["description"],
        category=data["category"],
        image_url=data["image_url"],
        countries=tuple(data["countries"]),
        currency_code=data["currency_code"],
        denomination=Denomination(
            kind=DenominationKind(denomination["kind"]),
            face_values=tuple(Decimal(value) for value in denomination["face_values"]),
            min_value=Decimal(denomination["min_value"]),
            max_value=Decimal(denomination["max_value"]),
        ),
        availability=RewardAvailability(data["availability"]),
        terms=data["terms"],
        redemption_instructions=data["redemption_instructions"],
    )
