"""Settlements become webhooks: the sandbox service relays the fulfiller's events to its WebhookSender.

The fulfiller publishes a settled redemption and then the user's new balance, synchronously, so
both are queued by the time the relay wakes: each settlement is sent with the balance published
right after it (read from the ledger only if none was).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from providers.base import Balance, RedemptionStatus
from providers.errors import ProviderError
from providers.events import BalanceChanged, ProviderEvent, RedemptionUpdated
from providers.rest.contract import BalanceWire, RedemptionSettledData, RedemptionWire
from providers.sandbox.provider import SandboxProvider
from providers.sandbox.webhook_sender import WebhookSender

logger = logging.getLogger(__name__)

SETTLED_TYPES = {RedemptionStatus.FULFILLED: "redemption.fulfilled", RedemptionStatus.FAILED: "redemption.failed"}


class SettlementRelay:
    """Reads every provider event from `queue`; sends redemption.fulfilled / redemption.failed."""

    def __init__(self, queue: asyncio.Queue[ProviderEvent], provider: SandboxProvider, sender: WebhookSender) -> None:
        self._queue = queue
        self._provider = provider
        self._sender = sender
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="sandbox-settlement-relay")

    async def aclose(self) -> None:
        """Stop, after relaying what is already queued (the provider is closed by now)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._relay(self._queued())

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            await self._relay([first, *self._queued()])

    def _queued(self) -> list[ProviderEvent]:
        events = []
        while not self._queue.empty():
            events.append(self._queue.get_nowait())
        return events

    async def _relay(self, events: list[ProviderEvent]) -> None:
        for index, event in enumerate(events):
            if not isinstance(event, RedemptionUpdated) or event.redemption.status not in SETTLED_TYPES:
                continue
            redemption = event.redemption
            balance = next(
                (
                    later.balance
                    for later in events[index + 1 :]
                    if isinstance(later, BalanceChanged) and later.user_id == redemption.user_id
                ),
                None,
            ) or await self._stored_balance(redemption.user_id, redemption.id)
            if balance is None:
                continue
            # Never the gift card: a webhook crosses networks and lands in logs; clients fetch the card.
            self._sender.send(
                SETTLED_TYPES[redemption.status],
                RedemptionSettledData(
                    redemption=RedemptionWire.of(redemption, with_card=False), balance=BalanceWire.of(balance)
                ),
            )

    async def _stored_balance(self, user_id: str, redemption_id: str) -> Balance | None:
        try:
            return await self._provider.current_balance(user_id)
        except ProviderError as exc:
            logger.warning("webhooks: settlement of %s not sent: %s", redemption_id, exc.message)
            return None
