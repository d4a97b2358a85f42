"""In-process publish/subscribe of provider events, keyed by user.

The providers (the redeem answer, the sandbox's fulfiller, the ledger's saga), provider webhooks and
the reconciler publish here when a balance or a redemption changes; GraphQL subscriptions listen per
user, and the sandbox service listens to every event (`subscribe_all`) to turn settlements into
webhooks. A later issue can put Redis behind the same interface.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from providers.base import Balance, Redemption, RedemptionStatus

logger = logging.getLogger(__name__)

SETTLED = frozenset({RedemptionStatus.FULFILLED, RedemptionStatus.FAILED})
# Redemptions whose furthest state the hub remembers: a late event comes seconds after the news it
# trails (a redeem answer held up, a webhook retried), while this many other redemptions change.
REMEMBERED_REDEMPTIONS = 50_000


@dataclass(frozen=True, slots=True)
class BalanceChanged:
    user_id: str
    balance: Balance


@dataclass(frozen=True, slots=True)
class RedemptionUpdated:
    user_id: str
    redemption: Redemption


ProviderEvent = BalanceChanged | RedemptionUpdated


def moves_forward(
    before: RedemptionStatus, before_updated_at: float, after: RedemptionStatus, after_updated_at: float
) -> bool:
    """Whether a redemption's state `after` is news over `before` (updated_at in Unix seconds).

    A settled redemption never changes again, not even to the other settled status; a PENDING one
    moves to a settlement, or to a PENDING newer than itself.
    """
    if before in SETTLED:
        return False
    return after in SETTLED or after_updated_at > before_updated_at


class EventHub:
    """Fan-out of events to the subscribers of one user; never blocks a publisher.

    News of a redemption reaches the hub by several paths (the redeem answer, webhooks, the reconciler)
    in whatever order they deliver it, so the hub keeps the furthest state of each recent redemption
    and drops an event that would not move it forward: no subscriber, however late it joins, sees a
    settled redemption go back to PENDING, nor the same state twice.
    """

    def __init__(self, *, queue_size: int = 256, remembered: int = REMEMBERED_REDEMPTIONS) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[str, set[asyncio.Queue[ProviderEvent]]] = {}
        self._everything: set[asyncio.Queue[ProviderEvent]] = set()
        self._remembered = remembered
        # redemption id -> (status, updated_at): the furthest state published, least recently moved first.
        self._furthest: OrderedDict[str, tuple[RedemptionStatus, float]] = OrderedDict()

    def publish(self, event: ProviderEvent) -> None:
        if isinstance(event, RedemptionUpdated) and not self._advance(event.redemption):
            return
        for queue in (*self._subscribers.get(event.user_id, ()), *self._everything):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A stalled subscriber loses events rather than slowing redemptions down.
                logger.warning("subscriber queue full; event dropped", extra={"event": type(event).__name__})

    def _advance(self, redemption: Redemption) -> bool:
        """Record the redemption's state if it moves it forward; whether it did (publish only then)."""
        state = (redemption.status, redemption.updated_at.timestamp())
        furthest = self._furthest.get(redemption.id)
        if furthest is not None and not moves_forward(*furthest, *state):
            return False
        self._furthest[redemption.id] = state
        self._furthest.move_to_end(redemption.id)
        if len(self._furthest) > self._remembered:
            self._furthest.popitem(last=False)
        return True

    def subscriber_count(self, user_id: str) -> int:
        return len(self._subscribers.get(user_id, ()))

    @asynccontextmanager
    async def subscribe(self, user_id: str) -> AsyncIterator[asyncio.Queue[ProviderEvent]]:
        queue: asyncio.Queue[ProviderEvent] = asyncio.Queue(self._queue_size)
        self._subscribers.setdefault(user_id, set()).add(queue)
        try:
            yield queue
        finally:
            queues = self._subscribers.get(user_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._subscribers[user_id]

    @asynccontextmanager
    async def subscribe_all(self, *, queue_size: int | None = None) -> AsyncIterator[asyncio.Queue[ProviderEvent]]:
        """Every event of every user, in publication order (for relays such as a webhook sender)."""
        queue: asyncio.Queue[ProviderEvent] = asyncio.Queue(queue_size or self._queue_size)
        self._everything.add(queue)
        try:
            yield queue
        finally:
            self._everything.discard(queue)
