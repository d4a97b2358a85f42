"""Face value to points: one conversion used by pointCost, pointCostFor and redemption."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_CEILING, Decimal

from providers import Reward


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
        return self.points_for(reward.denomination.min_value, reward.currency_code)

    def point_cost_for(self, reward: Reward, face_value: Decimal) -> int | None:
        """Points for that face value, or None when the reward cannot be redeemed at it."""
        # No gift card carries a fraction of a cent (providers refuse one), so neither does a price.
        if (
            not face_value.is_finite()
            or face_value.normalize().as_tuple().exponent < -2  # type: ignore[operator]
            or not reward.denomination.allows(face_value)
        ):
            return None
        return self.points_for(face_value, reward.currency_code)
