"""The redeem flow: validate, claim the idempotency key, call the provider once, remember.

Exactly one provider redemption per (user, clientMutationId): the key is claimed
durably before the provider is called, the provider gets a key derived from it
on every attempt, and a retry with the same input replays the stored payload.
When the provider may have committed without us learning the outcome (a timeout,
a dropped connection), the key stays PENDING with its exact request recorded; a
retry or the reconciler resends that request until the provider answers.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import logging
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from providers import Balance, RedeemRequest, RewardAvailability, RewardsProvider
from providers import errors as perr
from resolvers.errors import BadUserInput
from resolvers.idempotency import Claim, ClaimState, IdempotencyStore
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


class _Settle(enum.Enum):
    """What becomes of a claim when an attempt ends."""

    COMPLETE = "complete"  # the outcome is final: store it for replay
    RELEASE = "release"  # nothing took effect at the provider: forget the key
    DEFER = "defer"  # the provider may have committed: keep the request for a retry or the reconciler
    NOTHING = "nothing"  # the claim was lost to another holder


PENDING_MESSAGE = (
    "The reward provider has not confirmed this redemption yet; it will be completed. "
    "Retry with the same clientMutationId to see the result."
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
        defer_seconds: float = 2.0,
        max_defer_seconds: float = 60.0,
    ) -> None:
        self._provider = provider
        self._store = store
        self._pricing = pricing
        self._wait = wait_seconds
        self._poll = poll_interval
        self._defer = defer_seconds
        self._max_defer = max_defer_seconds
        # Keys this process is sending right now: once their lease lapses (a provider slower than the lease)
        # the store would let anyone take them over; here nobody in this process does, so a live call is
        # never sent twice from one process. Other processes rely on the lease, and the provider's key.
        self._running: set[tuple[str, str]] = set()

    async def redeem(self, user_id: str, client_mutation_id: str, reward_id: str, face_value: Decimal) -> RedeemOutcome:
        validate_client_mutation_id(client_mutation_id)
        if not face_value.is_finite() or face_value <= 0 or face_value > MAX_FACE_VALUE:
            return _failure(RedeemErrorCode.INVALID_FACE_VALUE, "That face value is not valid.", "faceValue")
        fingerprint = request_fingerprint(reward_id, face_value)

        deadline = time.monotonic() + self._wait
        while True:
            if (user_id, client_mutation_id) in self._running:
                claim = Claim(user_id, client_mutation_id, ClaimState.IN_PROGRESS)
            else:
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

        outcome = await self._run(claim, lambda: self._prepare(user_id, client_mutation_id, reward_id, face_value))
        logger.info(
            "redeem finished",
            extra={
                "user_id": user_id,
                "redemption_id": outcome.redemption_id,
                "outcome": outcome.errors[0].code.value if outcome.errors else "OK",
            },
        )
        return outcome

    async def resume(self, user_id: str, key: str, fingerprint: str) -> RedeemOutcome | None:
        """Take over a key left PENDING and resend its recorded request: the reconciler's entry point.

        None when there is nothing to do: another holder has the key, or it was settled meanwhile.
        """
        if (user_id, key) in self._running:
            return None  # this process is still waiting for the provider's answer
        claim = await self._store.claim(user_id, key, fingerprint)
        if claim.state is not ClaimState.ACQUIRED:
            return None
        if claim.request is None:  # the holder died before sending: nothing can have happened
            await self._store.release(claim)
            return None
        outcome = await self._run(claim, None)
        logger.info(
            "redeem reconciled",
            extra={
                "user_id": user_id,
                "redemption_id": outcome.redemption_id,
                "outcome": outcome.errors[0].code.value if outcome.errors else "OK",
            },
        )
        return outcome

    async def _run(
        self, claim: Claim, prepare: Callable[[], Awaitable[RedeemRequest | tuple[RedeemOutcome, bool]]] | None
    ) -> RedeemOutcome:
        """Send the claim's request (the recorded one, or a fresh one from `prepare`), then settle the claim."""
        self._running.add((claim.user_id, claim.key))
        try:
            return await self._run_claimed(claim, prepare)
        finally:
            self._running.discard((claim.user_id, claim.key))

    async def _run_claimed(
        self, claim: Claim, prepare: Callable[[], Awaitable[RedeemRequest | tuple[RedeemOutcome, bool]]] | None
    ) -> RedeemOutcome:
        # An earlier attempt recorded this request: it may have reached the provider already.
        sent = claim.request is not None
        settle = _Settle.RELEASE
        outcome = _failure(RedeemErrorCode.PROVIDER_UNAVAILABLE, "The reward provider is unavailable.")
        try:
            if claim.request is not None:
                request = _request_from(claim.user_id, claim.request)
            else:
                assert prepare is not None
                prepared = await prepare()
                if isinstance(prepared, tuple):
                    outcome, final = prepared
                    settle = _Settle.COMPLETE if final else _Settle.RELEASE
                    return outcome
                request = prepared
                if not await self._store.record_request(claim, _request_to(request)):
                    settle = _Settle.NOTHING
                    return _failure(RedeemErrorCode.REDEMPTION_IN_PROGRESS, PENDING_MESSAGE, "clientMutationId")
            sent = True
            settle = _Settle.DEFER  # until the provider answers, the outcome is unknown
            outcome, settle = await self._send(request, unknown_before=claim.request is not None)
            return outcome
        finally:
            if settle is _Settle.DEFER and not sent:
                settle = _Settle.RELEASE
            await asyncio.shield(self._finish(claim, settle, outcome))

    async def _finish(self, claim: Claim, settle: _Settle, outcome: RedeemOutcome) -> None:
        if settle is _Settle.COMPLETE:
            await self._store.complete(claim, outcome.to_payload())
        elif settle is _Settle.RELEASE:
            # Nothing took effect: forget the claim. A retry reaches the provider with the same
            # derived key, so even a redemption the provider did commit would be replayed, not repeated.
            await self._store.release(claim)
        elif settle is _Settle.DEFER:
            # Exponential, jittered, capped: a provider that stays down is not hammered by the reconciler.
            delay = min(self._max_defer, self._defer * 2 ** min(claim.attempts, 16)) * random.uniform(0.5, 1.0)
            await self._store.defer(claim, delay)
            logger.warning(
                "redeem outcome unknown; deferred", extra={"user_id": claim.user_id, "retry_in": round(delay, 2)}
            )

    async def _prepare(
        self, user_id: str, client_mutation_id: str, reward_id: str, face_value: Decimal
    ) -> RedeemRequest | tuple[RedeemOutcome, bool]:
        """The provider request for this input, or an outcome (and whether it is final) that ends here."""
        code = RedeemErrorCode
        try:
            (reward,) = await self._provider.get_rewards([reward_id])  # live, never the cache
        except perr.ProviderError as exc:
            logger.warning("redeem: provider failed", extra={"user_id": user_id, "error": type(exc).__name__})
            return _unavailable(), False
        if reward is None:
            return _failure(code.REWARD_NOT_FOUND, "No reward has that id.", "rewardId"), False
        points = self._pricing.point_cost_for(reward, face_value)
        if points is None:
            return _failure(
                code.INVALID_FACE_VALUE, "This reward cannot be redeemed at that face value.", "faceValue"
            ), False
        if reward.availability is not RewardAvailability.AVAILABLE:
            return _failure(code.REWARD_UNAVAILABLE, "This reward is not available right now.", "rewardId"), True
        return RedeemRequest(
            user_id=user_id,
            reward_id=reward_id,
            face_value=face_value,
            points=points,
            idempotency_key=provider_idempotency_key(user_id, client_mutation_id),
        )

    async def _send(self, request: RedeemRequest, *, unknown_before: bool) -> tuple[RedeemOutcome, _Settle]:
        """The provider's answer to the request, and what it means for the claim."""
        code = RedeemErrorCode
        try:
            result = await self._provider.redeem(request)
        # A refusal is definitive: a provider that had committed this key would replay it instead.
        except perr.InsufficientPoints:
            return _failure(code.INSUFFICIENT_POINTS, "Not enough points for this reward."), _Settle.COMPLETE
        except perr.RewardUnavailable:
            return _failure(
                code.REWARD_UNAVAILABLE, "This reward is not available right now.", "rewardId"
            ), _Settle.COMPLETE
        except perr.RewardNotFound:
            return _failure(code.REWARD_NOT_FOUND, "No reward has that id.", "rewardId"), _Settle.RELEASE
        except perr.InvalidFaceValue:
            return _failure(
                code.INVALID_FACE_VALUE, "This reward cannot be redeemed at that face value.", "faceValue"
            ), _Settle.RELEASE
        except perr.IdempotencyConflict:
            return _failure(
                code.IDEMPOTENCY_KEY_REUSED,
                "This clientMutationId was already used for a different redemption.",
                "clientMutationId",
            ), _Settle.COMPLETE
        except perr.ProviderError as exc:
            unknown = unknown_before or getattr(exc, "maybe_committed", False)
            logger.warning(
                "redeem: provider failed",
                extra={"user_id": request.user_id, "error": type(exc).__name__, "outcome_unknown": unknown},
            )
            if unknown:
                return _failure(code.REDEMPTION_IN_PROGRESS, PENDING_MESSAGE, "clientMutationId"), _Settle.DEFER
            return _unavailable(), _Settle.RELEASE
        return RedeemOutcome(redemption_id=result.redemption.id, balance=result.balance), _Settle.COMPLETE


def _unavailable() -> RedeemOutcome:
    return _failure(
        RedeemErrorCode.PROVIDER_UNAVAILABLE,
        "The reward provider is unavailable; retry with the same clientMutationId.",
    )


def _request_to(request: RedeemRequest) -> dict[str, Any]:
    return {
        "reward_id": request.reward_id,
        "face_value": str(request.face_value),
        "points": request.points,
        "idempotency_key": request.idempotency_key,
    }


def _request_from(user_id: str, stored: dict[str, Any]) -> RedeemRequest:
    return RedeemRequest(
        user_id=user_id,
        reward_id=stored["reward_id"],
        face_value=Decimal(stored["face_value"]),
        points=stored["points"],
        idempotency_key=stored["idempotency_key"],
    )


def request_fingerprint(reward_id: str, face_value: Decimal) -> str:
    """What a redeem input asks for, as stored with its key: equal amounts in any notation (25, 25.00) match."""
    return hashlib.sha256(f"{reward_id}\x00{face_value.normalize():f}".encode()).hexdigest()


def provider_idempotency_key(user_id: str, client_mutation_id: str) -> str:
    """The key sent to the provider: stable per (user, clientMutationId), no raw user input."""
    digest = hashlib.sha256(f"{user_id}\x00{client_mutation_id}".encode()).hexdigest()
    return f"gg_{digest}"
