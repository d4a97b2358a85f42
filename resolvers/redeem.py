"""The redeem flow: validate, claim the idempotency key, call the provider once, remember.

Exactly one provider redemption per (user, clientMutationId): the key is claimed
durably before the provider is called, the provider gets a key derived from it
on every attempt, and a retry with the same input replays the stored payload.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from providers import Balance, RedeemRequest, RewardAvailability, RewardsProvider
from providers import errors as perr
from resolvers.errors import BadUserInput
from resolvers.idempotency import ClaimState, IdempotencyStore
from resolvers.pricing import Pricing

logger = logging.getLogger(__name__)

CLIENT_MUTATION_ID = re.compile(r"[\x20-\x7e]{1,255}")
MAX_FACE_VALUE = Decimal("1000000")


class RedeemErrorCode(enum.Enum):
    INSUFFICIENT_POINTS = "INSUFFICIENT_POINTS"
    REWARD_NOT_FOUND = "REWARD_NOT_FOUND"
    REWARD_UNAVAILABLE = "REWARD_UNAVAILABLE"
    INVALID_FACE_VALUE = "INVALID_FACE_VALUE"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"
    REDEMPTION_IN_PROGRESS = "REDEMPTION_IN_PROGRESS"
    PROVIDER_UNAVAILABLE = "PROVIDER_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class RedeemError:
    code: RedeemErrorCode
    message: str
    field: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class RedeemOutcome:
    redemption_id: str | None = None
    balance: Balance | None = None
    errors: tuple[RedeemError, ...] = field(default_factory=tuple)

    def to_payload(self) -> dict[str, Any]:
        balance = self.balance
        return {
            "redemption_id": self.redemption_id,
            "balance": None
            if balance is None
            else {
                "user_id": balance.user_id,
                "available": balance.available,
                "pending": balance.pending,
                "updated_at": balance.updated_at.isoformat(),
            },
            "errors": [{"code": e.code.value, "message": e.message, "field": e.field} for e in self.errors],
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RedeemOutcome:
        balance = payload["balance"]
        return cls(
            redemption_id=payload["redemption_id"],
            balance=None
            if balance is None
            else Balance(
                user_id=balance["user_id"],
                available=balance["available"],
                pending=balance["pending"],
                updated_at=datetime.fromisoformat(balance["updated_at"]),
            ),
            errors=tuple(
                RedeemError(RedeemErrorCode(e["code"]), e["message"], tuple(e["field"]) if e["field"] else None)
                for e in payload["errors"]
            ),
        )


def _failure(code: RedeemErrorCode, message: str, *path: str) -> RedeemOutcome:
    return RedeemOutcome(errors=(RedeemError(code, message, ("input", *path) if path else None),))


def validate_client_mutation_id(value: str) -> None:
    if not CLIENT_MUTATION_ID.fullmatch(value):
        raise BadUserInput(
            "clientMutationId must be 1 to 255 printable ASCII characters.",
            argument="input.clientMutationId",
        )


class RedeemService:
    def __init__(
        self,
        provider: RewardsProvider,
        store: IdempotencyStore,
        pricing: Pricing,
        *,
        wait_seconds: float,
        poll_interval: float = 0.02,
    ) -> None:
        self._provider = provider
        self._store = store
        self._pricing = pricing
        self._wait = wait_seconds
        self._poll = poll_interval

    async def redeem(self, user_id: str, client_mutation_id: str, reward_id: str, face_value: Decimal) -> RedeemOutcome:
        validate_client_mutation_id(client_mutation_id)
        if not face_value.is_finite() or face_value <= 0 or face_value > MAX_FACE_VALUE:
            return _failure(RedeemErrorCode.INVALID_FACE_VALUE, "That face value is not valid.", "faceValue")
        fingerprint = request_fingerprint(reward_id, face_value)

        deadline = time.monotonic() + self._wait
        while True:
            claim = await self._store.claim(user_id, client_mutation_id, fingerprint)
            if claim.state is ClaimState.ACQUIRED:
                break
            if claim.state is ClaimState.DONE:
                assert claim.payload is not None
                return RedeemOutcome.from_payload(claim.payload)
            if claim.state is ClaimState.CONFLICT:
                return _failure(
                    RedeemErrorCode.IDEMPOTENCY_KEY_REUSED,
                    "This clientMutationId was already used for a different redemption.",
                    "clientMutationId",
                )
            if time.monotonic() >= deadline:
                return _failure(
                    RedeemErrorCode.REDEMPTION_IN_PROGRESS,
                    "A redemption with this clientMutationId is still in progress; retry shortly.",
                    "clientMutationId",
                )
            await asyncio.sleep(self._poll)

        remember = False
        try:
            outcome, remember = await self._attempt(user_id, client_mutation_id, reward_id, face_value)
        finally:
            if remember:
                await self._store.complete(claim, outcome.to_payload())
            else:
                # Nothing was decided: forget the claim. A retry reaches the provider with the same
                # derived key, so a redemption the provider did commit is replayed, not repeated.
                await asyncio.shield(self._store.release(claim))
        logger.info(
            "redeem finished",
            extra={
                "user_id": user_id,
                "redemption_id": outcome.redemption_id,
                "outcome": outcome.errors[0].code.value if outcome.errors else "OK",
            },
        )
        return outcome

    async def _attempt(
        self, user_id: str, client_mutation_id: str, reward_id: str, face_value: Decimal
    ) -> tuple[RedeemOutcome, bool]:
        """The outcome, and whether it is final (stored for replay) or may be retried."""
        code = RedeemErrorCode
        try:
            (reward,) = await self._provider.get_rewards([reward_id])  # live, never the cache
            if reward is None:
                return _failure(code.REWARD_NOT_FOUND, "No reward has that id.", "rewardId"), False
            points = self._pricing.point_cost_for(reward, face_value)
            if points is None:
                return _failure(code.INVALID_FACE_VALUE, "This reward cannot be redeemed at that face value.", "faceValue"), False
            if reward.availability is not RewardAvailability.AVAILABLE:
                return _failure(code.REWARD_UNAVAILABLE, "This reward is not available right now.", "rewardId"), True
            result = await self._provider.redeem(
                RedeemRequest(
                    user_id=user_id,
                    reward_id=reward_id,
                    face_value=face_value,
                    points=points,
                    idempotency_key=provider_idempotency_key(user_id, client_mutation_id),
                )
            )
        except perr.InsufficientPoints:
            return _failure(code.INSUFFICIENT_POINTS, "Not enough points for this reward."), True
        except perr.RewardUnavailable:
            return _failure(code.REWARD_UNAVAILABLE, "This reward is not available right now.", "rewardId"), True
        except perr.RewardNotFound:
            return _failure(code.REWARD_NOT_FOUND, "No reward has that id.", "rewardId"), False
        except perr.InvalidFaceValue:
            return _failure(code.INVALID_FACE_VALUE, "This reward cannot be redeemed at that face value.", "faceValue"), False
        except perr.IdempotencyConflict:
            return _failure(
                code.IDEMPOTENCY_KEY_REUSED,
                "This clientMutationId was already used for a different redemption.",
                "clientMutationId",
            ), True
        except perr.ProviderError as exc:
            logger.warning("redeem: provider failed", extra={"user_id": user_id, "error": type(exc).__name__})
            return _failure(code.PROVIDER_UNAVAILABLE, "The reward provider is unavailable; retry with the same clientMutationId."), False
        return RedeemOutcome(redemption_id=result.redemption.id, balance=result.balance), True


def request_fingerprint(reward_id: str, face_value: Decimal) -> str:
    """What a redeem input asks for, as stored with its key: equal amounts in any notation (25, 25.00) match."""
    return hashlib.sha256(f"{reward_id}\x00{face_value.normalize():f}".encode()).hexdigest()


def provider_idempotency_key(user_id: str, client_mutation_id: str) -> str:
    """The key sent to the provider: stable per (user, clientMutationId), no raw user input."""
    digest = hashlib.sha256(f"{user_id}\x00{client_mutation_id}".encode()).hexdigest()
    return f"gg_{digest}"
