"""In-process publish/subscribe of provider events, keyed by user.

The sandbox publishes here when a balance or a redemption changes; GraphQL
subscriptions listen per user, and the sandbox service listens to every event
(`subscribe_all`) to turn settlements into webhooks. A later issue can put Redis
behind the same interface.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from providers.base import Balance, Redemption

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class BalanceChanged:
    user_id: str
    balance: Balance


@dataclass(frozen=True, slots=True)
class RedemptionUpdated:
    user_id: str
    redemption: Redemption


ProviderEvent = BalanceChanged | RedemptionUpdated


class EventHub:
    """Fan-out of events to the subscribers of one user; never blocks a publisher."""

    def __init__(self, *, queue_size: int = 256) -> None:
        self._queue_size = queue_size
        self._subscribers: dict[str, set[asyncio.Queue[ProviderEvent]]] = {}
        self._everything: set[asyncio.Queue[ProviderEvent]] = set()

    def publish(self, event: ProviderEvent) -> None:
        for queue in (*self._subscribers.get(event.user_id, ()), *self._everything):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A stalled subscriber loses events rather than slowing redemptions down.
                logger.warning("subscriber queue full; event dropped", extra={"event": type(event).__name__})

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
