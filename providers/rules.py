"""Pure redemption rules, shared by the providers that keep points: what a redeem request must satisfy and how
its idempotency fingerprint is taken."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal

from providers.base import RedeemRequest, Reward, RewardAvailability
from providers.errors import InvalidFaceValue, RewardNotFound, RewardUnavailable


def validate(request: RedeemRequest, reward: Reward | None, *, provider: str) -> Reward:
    """The reward, if the request may redeem it; otherwise the ProviderError that says why not."""
    if reward is None:
        raise RewardNotFound(f"no reward {request.reward_id!r}", provider=provider)
    if reward.availability is not RewardAvailability.AVAILABLE:
        state = reward.availability.value.lower().replace("_", " ")
        raise RewardUnavailable(f"reward {reward.id} is {state}", provider=provider)
    face_value = request.face_value
    if not allows_face_value(reward, face_value):
        raise InvalidFaceValue(
            f"{face_value} {reward.currency_code} is not a face value of reward {reward.id}", provider=provider
        )
    if request.points <= 0:
        raise InvalidFaceValue("a redemption must cost a positive number of points", provider=provider)
    return reward


def allows_face_value(reward: Reward, face_value: Decimal) -> bool:
    """Whether the reward can be ordered at that face value: one of its values, in whole cents, and in whole
    units when the provider takes only those (Tango refuses anything else at order time, with 422.026, after
    the points were reserved)."""
    if not _whole_cents(face_value) or not reward.denomination.allows(face_value):
        return False
    return not reward.whole_amounts_only or face_value == face_value.to_integral_value()


def fingerprint(request: RedeemRequest) -> str:
    """A digest of what the request asks for; equal amounts in any notation (25, 25.00) match."""
    face_value = str(request.face_value.normalize()) if request.face_value.is_finite() else str(request.face_value)
    payload = json.dumps([request.user_id, request.reward_id, face_value, request.points], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def _whole_cents(value: Decimal) -> bool:
    # NaN would raise on comparison, and no card can carry a fraction of a cent.
    return value.is_finite() and value.normalize().as_tuple().exponent >= -2  # type: ignore[operator]
