"""Face value to points: one conversion used by pointCost, pointCostFor and redemption."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal

from providers import DenominationKind, Reward
from providers.rules import allows_face_value


class Pricing:
    def __init__(self, points_per_unit: Mapping[str, Decimal]) -> None:
        self._rates = {code.upper(): Decimal(rate) for code, rate in points_per_unit.items()}

    def points_for(self, amount: Decimal, currency_code: str) -> int | None:
        """Points for `amount` of a currency, rounded up; None when the currency has no rate."""
        rate = self._rates.get(currency_code.upper())
        if rate is None:
            return None
        return int((amount * rate).to_integral_value(rounding=ROUND_CEILING))

    def point_cost(self, reward: Reward) -> int | None:
        """Points for the smallest face value redeem accepts; None when there is none (left out of the catalog)."""
        denomination = reward.denomination
        if denomination.kind is DenominationKind.FIXED:
            candidates = sorted(denomination.face_values)
        else:  # the minimum, or the first whole unit above it where the provider takes whole amounts only
            candidates = [denomination.min_value, denomination.min_value.to_integral_value(rounding=ROUND_CEILING)]
        smallest = next((value for value in candidates if allows_face_value(reward, value)), None)
        return None if smallest is None else self.points_for(smallest, reward.currency_code)

    def point_cost_for(self, reward: Reward, face_value: Decimal) -> int | None:
        """Points for that face value, or None when the reward cannot be redeemed at it."""
        # The same rule redeem applies (whole cents, the reward's values, whole units where the provider
        # takes only those): never a price for an amount redeem would refuse.
        if not allows_face_value(reward, face_value):
            return None
        return self.points_for(face_value, reward.currency_code)
