"""pointCost is the price of the smallest face value redeem accepts, so the catalog never quotes an amount
that redeem would refuse (whole-amount items included)."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from providers import Denomination, DenominationKind
from resolvers.pricing import Pricing
from tests.test_ledger import REWARD

PRICING = Pricing({"USD": Decimal(100)})


def variable(low: str, high: str) -> Denomination:
    return Denomination(DenominationKind.VARIABLE, (), Decimal(low), Decimal(high))


def fixed(*values: str) -> Denomination:
    amounts = tuple(Decimal(value) for value in values)
    return Denomination(DenominationKind.FIXED, amounts, amounts[0], amounts[-1])


@pytest.mark.parametrize(
    ("denomination", "whole_amounts_only", "cost"),
    [
        (variable("0.50", "100"), False, 50),
        (variable("0.50", "100"), True, 100),  # 1 USD: the first whole amount
        (variable("0.25", "0.75"), True, None),  # no whole amount in range: not redeemable, left out
        (fixed("2.50", "5", "10"), False, 250),
        (fixed("2.50", "5", "10"), True, 500),
        (fixed("2.50"), True, None),
    ],
    ids=["variable", "variable-whole", "variable-no-whole", "fixed", "fixed-whole", "fixed-no-whole"],
)
def test_point_cost_prices_the_smallest_redeemable_face_value(
    denomination: Denomination, whole_amounts_only: bool, cost: int | None
) -> None:
    reward = dataclasses.replace(REWARD, denomination=denomination, whole_amounts_only=whole_amounts_only)

    assert PRICING.point_cost(reward) == cost
    if cost is not None:  # the quoted amount is one redeem accepts
        assert PRICING.point_cost_for(reward, Decimal(cost) / 100) == cost
