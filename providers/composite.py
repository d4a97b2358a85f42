"""`LedgerProvider`: giftgraph's own points ledger and a gift-card seller behind the RewardsProvider port.

A redemption is a saga that never loses points and never orders twice: reserve the points and
record the redemption PENDING under the idempotency key (one database transaction) → order
upstream with a reference derived from that key → FULFILLED with the card, PENDING for delivery
later, or FAILED with the points refunded. When the order's outcome is unknown (or the process
died before ordering) the redemption stays PENDING and the order reconciler looks the order up by
its reference, placing it when the provider has none, until it settles.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from providers.base import (
    Balance,
    CallCounts,
    RedeemRequest,
    RedeemResult,
    Redemption,
    RedemptionStatus,
    Reward,
    RewardAvailability,
    RewardPage,
    Transaction,
    TransactionKind,
    TransactionPage,
)
from providers.errors import (
    FundingInsufficient,
    IdempotencyConflict,
    InvalidFaceValue,
    ProviderAuthenticationFailed,
    ProviderError,
    ProviderPermanentFailure,
    ProviderUnavailable,
    RewardNotFound,
    RewardUnavailable,
)
from providers.events import BalanceChanged, EventHub, RedemptionUpdated
from providers.fulfilment import FulfilmentProvider, FundingBalance, Order, OrderEvent, OrderRequest, OrderStatus
from providers.ledger import PointsLedger, Unsettled
from providers.rules import fingerprint, validate

logger = logging.getLogger(__name__)

MAX_PAGE_SIZE = 100
# Answers to placing an order that prove it was not placed and never will be with this request: refund,
# unless an earlier attempt of the same call may have been committed (`maybe_committed`). A 409 is definite
# either way: the seller holds another request's order under the reference, never this one's.
REFUSALS = (
    InvalidFaceValue,
    RewardUnavailable,
    RewardNotFound,
    IdempotencyConflict,
    ProviderPermanentFailure,
    ProviderAuthenticationFailed,
    FundingInsufficient,
)


def order_reference(idempotency_key: str) -> str:
    """The provider's idempotency reference for a key: stable, alphanumeric, 42 characters (Tango allows 100)."""
    return "gg" + hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]


@dataclass(frozen=True, kw_only=True)
class SagaTiming:
    catalog_ttl: float = 30.0  # the seller's catalog is read at most this often (the gateway caches above)
    funding_ttl: float = 30.0  # the company account's balance is trusted this long
    first_check: float = 30.0  # a new PENDING redemption is left to its own saga this long
    claim_lease: float = 45.0  # a reconciler's hold on one redemption: a look-up and an order call, with room
    funding_recheck: float = 1.0  # a cached shortfall younger than this is trusted without asking again
    funding_failure_ttl: float = 5.0  # a failed read of the balance is answered from memory this long
    reconcile_interval: float = 2.0
    max_backoff: float = 300.0


class LedgerProvider:
    """The port answered from the points ledger, with orders placed at a `FulfilmentProvider`."""

    def __init__(
        self,
        *,
        ledger: PointsLedger,
        fulfilment: FulfilmentProvider,
        events: EventHub,
        timing: SagaTiming = SagaTiming(),
        clock: Callable[[], float] = time.monotonic,
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = fulfilment.name
        self.ledger = ledger
        self.fulfilment = fulfilment
        self.calls = CallCounts()
        self._events = events
        self._timing = timing
        self._clock = clock
        self._catalog: tuple[Reward, ...] = ()
        self._catalog_by_id: dict[str, Reward] = {}
        self._positions: dict[str, int] = {}  # the catalog walk's cursors: a reward id -> its index
        self._catalog_at = float("-inf")
        self._catalog_generation = 0  # bumped by invalidate_catalog: a read begun before then is not trusted
        self._catalog_refresh: asyncio.Lock = asyncio.Lock()
        self._funding: FundingBalance | None = None
        self._funding_at = float("-inf")
        self._funding_failure: tuple[float, ProviderError] | None = None  # (when, what) of the last failed read
        self._funding_read = asyncio.Lock()
        self._reconciler: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._on_close = on_close  # e.g. dispose the ledger's engine, which the factory made

    # Lifecycle

    async def start(self) -> None:
        await self.ledger.start()
        await self.fulfilment.start()
        self._stopping.clear()
        self._reconciler = asyncio.create_task(self._reconcile_forever(), name=f"{self.name}-order-reconciler")

    async def aclose(self) -> None:
        task, self._reconciler = self._reconciler, None
        if task is not None:
            self._stopping.set()
            try:
                await asyncio.wait_for(asyncio.shield(task), 5.0)
            except TimeoutError:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self.fulfilment.aclose()
        if self._on_close is not None:
            await self._on_close()

    async def check(self) -> None:
        """Readiness: the seller answered for the company account within funding_ttl. Probes and metric
        scrapes read the cached balance, so they never spend the seller's rate limit (Tango: 1/s)."""
        self.calls.add("check")
        await self.funding_balance()

    async def funding_balance(self, *, max_age: float | None = None) -> FundingBalance:
        """The company account at the seller (operators see it in /readyz), no older than `max_age` (default
        funding_ttl). One read at a time: callers arriving meanwhile share it. A failed read is answered from
        memory for funding_failure_ttl, so probes and refused redemptions do not ask a failing seller each."""
        max_age = self._timing.funding_ttl if max_age is None else max_age
        if self._funding is not None and self._clock() - self._funding_at <= max_age:
            return self._funding
        async with self._funding_read:
            now = self._clock()
            if self._funding is not None and now - self._funding_at <= max_age:
                return self._funding  # read by the caller we waited for
            failed = self._funding_failure
            if failed is not None and now - failed[0] <= self._timing.funding_failure_ttl:
                raise copy.copy(failed[1])
            try:
                funding = await self.fulfilment.funding_balance()
            except ProviderError as exc:
                self._funding_failure = (self._clock(), copy.copy(exc))
                raise
            self._funding, self._funding_at, self._funding_failure = funding, self._clock(), None
            return funding

    # Catalog: the seller's

    async def list_rewards(self, *, cursor: str | None, limit: int) -> RewardPage:
        self.calls.add("list_rewards")
        catalog = await self._current_catalog()
        limit = min(max(limit, 1), MAX_PAGE_SIZE)
        start = 0
        if cursor is not None:
            position = self._positions.get(cursor)
            if position is None:
                raise ProviderError("invalid cursor", provider=self.name)
            start = position + 1
        items = catalog[start : start + limit]
        more = start + limit < len(catalog)
        return RewardPage(items=items, next_cursor=items[-1].id if more and items else None)

    async def get_rewards(self, ids: Sequence[str]) -> list[Reward | None]:
        self.calls.add("get_rewards")
        await self._current_catalog()
        found: list[Reward | None] = [self._catalog_by_id.get(reward_id) for reward_id in ids]
        dropped = [reward_id for reward_id, reward in zip(ids, found, strict=True) if reward is None]
        if dropped:
            # Sellers drop discontinued products from their catalog; a redemption of one still shows what
            # was redeemed: the copy taken at reserve, marked DISCONTINUED so it cannot be redeemed again.
            copies = await self.ledger.redeemed_rewards(dropped)
            found = [
                reward
                if reward is not None or reward_id not in copies
                else dataclasses.replace(copies[reward_id], availability=RewardAvailability.DISCONTINUED)
                for reward_id, reward in zip(ids, found, strict=True)
            ]
        return found

    async def _current_catalog(self) -> tuple[Reward, ...]:
        if self._clock() - self._catalog_at <= self._timing.catalog_ttl:
            return self._catalog
        async with self._catalog_refresh:  # concurrent misses share one read of the seller's catalog
            if self._clock() - self._catalog_at > self._timing.catalog_ttl:
                generation = self._catalog_generation
                catalog = tuple(await self.fulfilment.catalog())
                self._catalog, self._catalog_by_id = catalog, {reward.id: reward for reward in catalog}
                self._positions = {reward.id: index for index, reward in enumerate(catalog)}
                # A change announced while the read was under way may not be in it: serve it, but read again
                # next time rather than trust it for the whole TTL.
                if generation == self._catalog_generation:
                    self._catalog_at = self._clock()
        return self._catalog

    def invalidate_catalog(self) -> None:
        self._catalog_at = float("-inf")
        self._catalog_generation += 1

    # Points: the ledger's

    async def get_balances(self, user_ids: Sequence[str]) -> list[Balance]:
        self.calls.add("get_balances")
        return await self.ledger.balances(user_ids)

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
        self.calls.add("list_transactions")
        return await self.ledger.transactions(
            user_id, kinds=kinds, older_than=older_than, newer_than=newer_than, limit=limit, from_oldest=from_oldest
        )

    async def get_transactions(self, ids: Sequence[str]) -> list[Transaction | None]:
        self.calls.add("get_transactions")
        return await self.ledger.transactions_by_id(ids) if ids else []

    async def get_redemptions(self, ids: Sequence[str]) -> list[Redemption | None]:
        self.calls.add("get_redemptions")
        return await self.ledger.redemptions_by_id(ids) if ids else []

    # The saga

    async def redeem(self, request: RedeemRequest) -> RedeemResult:
        self.calls.add("redeem")
        reference = order_reference(request.idempotency_key)
        try:
            reward = await self._reward_for(request, reference)
        except ProviderError as exc:
            # Nothing is reserved before this point and the ledger is ours: whatever the seller's answer
            # was (a 5xx while reading the catalog, say), this redemption certainly did not happen.
            exc.maybe_committed = False
            raise
        # One transaction: a replay, a conflict (caught here, before any call: Tango would replay another
        # item's order), or the debit and the PENDING redemption.
        reserved = await self.ledger.reserve(
            request, fingerprint=fingerprint(request), reference=reference, reward=reward
        )
        if reserved.replayed:
            return RedeemResult(reserved.redemption, reserved.balance, replayed=True)
        await self.ledger.defer(reserved.redemption.id, self._timing.first_check)
        self._publish(reserved.redemption, reserved.balance)
        settled = await self._order(
            reserved.redemption,
            OrderRequest(
                reference=reference,
                reward_id=reward.id,
                face_value=request.face_value,
                currency_code=reward.currency_code,
                recipient_name=request.user_id,
            ),
        )
        if settled is None:
            return RedeemResult(reserved.redemption, reserved.balance)
        return RedeemResult(settled[0], settled[1])

    async def _reward_for(self, request: RedeemRequest, reference: str) -> Reward:
        """The reward to reserve for: checked and funded for a new redemption, as it was for a replay."""
        previous = await self.ledger.redemption_by_reference(reference)
        (reward,) = await self.get_rewards([request.reward_id])
        if previous is None:
            reward = validate(request, reward, provider=self.name)
            await self._require_funding(reward, request)
            return reward
        if reward is not None:
            return reward
        # A replay must not depend on the seller still listing the reward: use the copy taken at reserve.
        snapshot = await self.ledger.reward_snapshot(previous.id)
        if snapshot is None:
            raise RewardNotFound(f"no reward {request.reward_id!r}", provider=self.name)
        return snapshot

    async def _require_funding(self, reward: Reward, request: RedeemRequest) -> None:
        """Refuse before reserving when the company account cannot pay: the user's points stay untouched."""
        funding = await self.funding_balance()
        if self._short(funding, reward, request):
            # A top-up is seen within funding_recheck, not funding_ttl: before refusing on a cached shortfall,
            # ask afresh, at most once per funding_recheck however many redemptions are refused meanwhile.
            funding = await self.funding_balance(max_age=self._timing.funding_recheck)
        if self._short(funding, reward, request):
            logger.warning("funding balance too low", extra={"provider": self.name, "currency": funding.currency_code})
            raise ProviderUnavailable("the provider's funding balance cannot cover this redemption", provider=self.name)

    @staticmethod
    def _short(funding: FundingBalance, reward: Reward, request: RedeemRequest) -> bool:
        return funding.currency_code == reward.currency_code and funding.available < request.face_value

    async def _order(self, redemption: Redemption, order: OrderRequest) -> tuple[Redemption, Balance] | None:
        """Place the order and settle what its answer decides; None when it stays PENDING."""
        try:
            placed = await self.fulfilment.place_order(order)
        except ProviderError as exc:
            settled = await self._refuse(redemption.id, exc)
            if isinstance(exc, IdempotencyConflict):
                # The seller holds another order under this reference (Tremendous' 409): the points are
                # back, and the client learns that its clientMutationId cannot be used for this request.
                exc.maybe_committed = False
                raise
            return settled
        return await self._apply(redemption.id, placed)

    async def _refuse(self, redemption_id: str, exc: ProviderError) -> tuple[Redemption, Balance] | None:
        """Settle FAILED with the points back when the seller's answer to an order proves nothing was
        ordered; otherwise (temporary, or maybe placed) leave it PENDING for the reconciler."""
        definite = isinstance(exc, REFUSALS) and (isinstance(exc, IdempotencyConflict) or not exc.maybe_committed)
        if not definite:
            logger.warning("order outcome unknown", extra={"provider": self.name, "error": type(exc).__name__})
            return None
        logger.warning("order refused", extra={"provider": self.name, "error": type(exc).__name__})
        reason = "The provider refused the order"
        if isinstance(exc, FundingInsufficient):
            self._funding_at = float("-inf")  # the next redemption asks again, and is refused before reserving
            reason = "The provider cannot fund this reward right now"
        return await self._settle(redemption_id, status=RedemptionStatus.FAILED, reason=reason)

    async def _apply(self, redemption_id: str, order: Order) -> tuple[Redemption, Balance] | None:
        if order.status is OrderStatus.FULFILLED:
            return await self._settle(redemption_id, status=RedemptionStatus.FULFILLED, order=order)
        if order.status is OrderStatus.FAILED:
            return await self._settle(
                redemption_id, status=RedemptionStatus.FAILED, order=order, reason=order.failure_reason
            )
        await self.ledger.mark_ordered(redemption_id, order.order_id)
        return None

    async def _settle(
        self,
        redemption_id: str,
        *,
        status: RedemptionStatus,
        order: Order | None = None,
        reason: str | None = None,
    ) -> tuple[Redemption, Balance] | None:
        result = await self.ledger.settle(
            redemption_id,
            status=status,
            order_id=None if order is None else order.order_id,
            gift_card=None if order is None else order.gift_card,
            failure_reason=(reason or "The provider could not fulfil this reward")
            if status is RedemptionStatus.FAILED
            else None,
        )
        if result is None:
            return None  # settled meanwhile (a webhook, the reconciler)
        self._publish(result.redemption, result.balance)
        logger.info("redemption settled", extra={"provider": self.name, "status": status.value})
        return result.redemption, result.balance

    def _publish(self, redemption: Redemption, balance: Balance) -> None:
        self._events.publish(BalanceChanged(user_id=redemption.user_id, balance=balance))
        self._events.publish(RedemptionUpdated(user_id=redemption.user_id, redemption=redemption))

    # Webhooks and the reconciler

    async def settle_event(self, event: OrderEvent) -> bool:
        """Settle the redemption a verified order webhook is about, from the order read live (never from the
        event's own status: events arrive late, twice, or out of order); True when it settled."""
        order = await self.fulfilment.order_for_event(event)
        if order is None or not order.reference:
            return False
        redemption = await self.ledger.redemption_by_reference(order.reference)
        if redemption is None or redemption.status is not RedemptionStatus.PENDING:
            return False
        return await self._apply(redemption.id, order) is not None

    async def reconcile_once(self) -> int:
        """One pass over the PENDING redemptions that are due; how many settled."""
        settled = 0
        for item in await self.ledger.unsettled():
            if self._stopping.is_set():
                break
            # Taken for as long as a saga's own order call may take: another pass, in this process or
            # another sharing the database, leaves it alone meanwhile, so no two ask the seller at once.
            if not await self.ledger.claim(item.redemption_id, self._timing.claim_lease):
                continue
            result = await self._reconcile(item)
            if result is not None:
                settled += 1
            else:
                delay = min(self._timing.max_backoff, self._timing.reconcile_interval * 2 ** min(item.attempts, 16))
                await self.ledger.defer(item.redemption_id, delay * random.uniform(0.5, 1.0))
        return settled

    async def _reconcile(self, item: Unsettled) -> tuple[Redemption, Balance] | None:
        try:
            order = await self.fulfilment.find_order(item.reference)
        except ProviderError as exc:
            # Whatever the look-up's error (a 401 after rotated credentials, a 404, a 5xx), it says nothing
            # about the order: never refund on it, ask again later.
            logger.warning(
                "reconcile: order look-up failed", extra={"provider": self.name, "error": type(exc).__name__}
            )
            return None
        if order is not None:
            return await self._apply(item.redemption_id, order)
        # The provider has no order under the reference: the saga never placed it (e.g. the process died
        # after reserving). Place it now; the reference keeps it at one.
        snapshot = await self.ledger.reward_snapshot(item.redemption_id)
        request = OrderRequest(
            reference=item.reference,
            reward_id=item.reward_id,
            face_value=item.face_value,
            currency_code=item.currency_code if snapshot is None else snapshot.currency_code,
            recipient_name=item.user_id,
        )
        try:
            placed = await self.fulfilment.place_order(request)
        except ProviderError as exc:
            return await self._refuse(item.redemption_id, exc)
        return await self._apply(item.redemption_id, placed)

    async def _reconcile_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.reconcile_once()
            except Exception:
                logger.exception("order reconciler pass failed")
            try:
                await asyncio.wait_for(self._stopping.wait(), self._timing.reconcile_interval)
            except TimeoutError:
                pass
