"""Background fulfilment: after a delay a PENDING redemption gets a gift card, or fails and is refunded."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from providers.base import Balance, GiftCard, Redemption, RedemptionStatus, Reward, TransactionKind
from providers.events import BalanceChanged, EventHub, RedemptionUpdated
from providers.sandbox.store import SandboxStore

logger = logging.getLogger(__name__)

CLAIM_BASE_URL = "https://sandbox.giftgraph.invalid/claim"
CARD_VALIDITY = timedelta(days=365)
FAILURE_REASON = "The provider could not fulfil this reward"
# Letters and digits that cannot be misread for one another (no 0/O, 1/I/L).
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
RETRY_DELAYS = (0.5, 2.0, 5.0)


def utcnow() -> datetime:
    return datetime.now(UTC)


def issue_gift_card(now: datetime) -> GiftCard:
    """A fresh card: code, PIN and claim URL from a cryptographic source, valid for a year."""
    code = "-".join("".join(secrets.choice(CODE_ALPHABET) for _ in range(4)) for _ in range(4))
    pin = f"{secrets.randbelow(10**6):06d}"
    return GiftCard(
        code=code,
        pin=pin,
        claim_url=f"{CLAIM_BASE_URL}/{secrets.token_urlsafe(24)}",
        expires_at=now + CARD_VALIDITY,
    )


class Fulfiller:
    """Runs one background task per pending redemption and settles it in its own write transaction."""

    def __init__(
        self,
        *,
        store: SandboxStore,
        events: EventHub,
        rewards: Mapping[str, Reward],
        failing: frozenset[str],
    ) -> None:
        self._store = store
        self._events = events
        self._rewards = rewards
        self._failing = failing
        self._tasks: set[asyncio.Task[None]] = set()
        self._accepting = False

    @property
    def active(self) -> int:
        return len(self._tasks)

    def open(self) -> None:
        self._accepting = True

    def schedule(self, redemption_id: str, delay: float) -> None:
        if not self._accepting:
            # Closing: the redemption stays PENDING in the file and the next start() resumes it.
            return
        task = asyncio.create_task(self._run(redemption_id, max(0.0, delay)), name=f"sandbox-fulfil-{redemption_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self._accepting = False
        # Holding the write lock means no task is inside a transaction, so cancelling cannot
        # interrupt a commit; tasks are only ever cancelled while sleeping or queued for the lock.
        async with self._store.write_lock:
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _run(self, redemption_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        for retry_delay in (*RETRY_DELAYS, None):
            try:
                await self.settle(redemption_id)
                return
            except Exception:
                # The message names the redemption only: never the card's code, pin or claim URL.
                logger.exception("sandbox fulfilment of %s failed", redemption_id)
                if retry_delay is None:
                    logger.error("giving up on %s until the next start", redemption_id)
                    return
                await asyncio.sleep(retry_delay)

    async def settle(self, redemption_id: str) -> Redemption | None:
        """Fulfil or fail the redemption if it is still PENDING; the settled redemption, else None."""
        now = utcnow()
        async with self._store.write() as ledger:
            current = (await ledger.redemptions([redemption_id])).get(redemption_id)
            if current is None or current.status is not RedemptionStatus.PENDING:
                return None  # already settled, possibly by another process sharing the file
            if current.reward_id in self._failing:
                settled = await ledger.settle(
                    redemption_id, status=RedemptionStatus.FAILED, failure_reason=FAILURE_REASON, now=now
                )
                if settled is None:
                    return None  # never refund twice
                available = await ledger.credit(current.user_id, current.points, now)
                await ledger.record(
                    user_id=current.user_id,
                    kind=TransactionKind.REFUND,
                    points=current.points,
                    balance_after=available,
                    description=f"Refund: {self._reward_name(current.reward_id)} could not be fulfilled",
                    now=now,
                    redemption_id=redemption_id,
                )
            else:
                settled = await ledger.settle(
                    redemption_id, status=RedemptionStatus.FULFILLED, gift_card=issue_gift_card(now), now=now
                )
            balance: Balance = await ledger.balance(current.user_id)
        if settled is None:
            return None
        self._events.publish(RedemptionUpdated(user_id=settled.user_id, redemption=settled))
        # Pending points drop on every settlement (and a refund raises the available points).
        self._events.publish(BalanceChanged(user_id=settled.user_id, balance=balance))
        logger.info("sandbox redemption %s %s", redemption_id, settled.status.value)
        return settled

    def _reward_name(self, reward_id: str) -> str:
        reward = self._rewards.get(reward_id)
        return reward.name if reward is not None else reward_id
