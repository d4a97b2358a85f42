"""Provider webhooks applied once each: the event ids already processed, the furthest state of each
redemption, and what subscribers and the catalog cache learn from an event.

An event id is stored in the same transaction that records what the event changed, so a duplicate
(a retry, or two deliveries racing) is answered without being applied twice, and an event is never
answered as handled without its id stored. Events may arrive in any order: a redemption never moves
back from FULFILLED/FAILED, nor to an older state (the rule of providers.events, here kept across
processes and restarts), and a balance is never replaced by an older one. The provider's ledger owns
the data: the live answer is preferred to the event's copy, which serves when the provider cannot be asked.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import Column, Float, MetaData, String, Table, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from providers import (
    Balance,
    BalanceChanged,
    EventHub,
    Redemption,
    RedemptionStatus,
    RedemptionUpdated,
    RewardsProvider,
)
from providers.errors import ProviderError
from providers.events import SETTLED, moves_forward
from providers.rest.webhooks import CatalogItemChanged, PointsEarned, ProviderWebhook, RedemptionSettled
from providers.sql import writer
from resolvers.catalog_cache import CatalogCache
from resolvers.migrate import upgrade

logger = logging.getLogger(__name__)

metadata = MetaData()

webhook_events = Table(
    "webhook_events",
    metadata,
    Column("provider", String(64), primary_key=True),
    Column("event_id", String(255), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("processed_at", Float, nullable=False, index=True),
)

redemption_states = Table(
    "redemption_states",
    metadata,
    Column("redemption_id", String(255), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("updated_at", Float, nullable=False, index=True),  # the provider's updated_at, in Unix seconds
)

# Senders retry for hours, not weeks: ids older than this cannot come back as duplicates.
EVENT_RETENTION_SECONDS = 30 * 86_400
# How often the ids past retention are dropped (at start, then with the first event after each interval).
PRUNE_INTERVAL_SECONDS = 3600.0
DEFAULT_RETRY_AFTER = 5.0


class WebhookOutcome(enum.Enum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"  # this event id was processed before: nothing done
    IGNORED = "ignored"  # a type this gateway does not handle: recorded, nothing done


class WebhookDeferred(Exception):
    """The event needs the provider, which cannot answer now; nothing was recorded, so a retry applies it."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(slots=True)
class _Effects:
    """What one event changes, worked out (with the provider's help) before the transaction that records it."""

    user_id: str | None = None
    balance: Balance | None = None
    redemption: Redemption | None = None
    invalidate_catalog: bool = False


class WebhookService:
    def __init__(
        self,
        engine: AsyncEngine,
        provider: RewardsProvider,
        events: EventHub,
        catalog: CatalogCache,
        *,
        retry_after: float = DEFAULT_RETRY_AFTER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._writer = writer(engine)
        # One writer at a time in this process; BEGIN IMMEDIATE orders writers across processes.
        self._write_lock = asyncio.Lock()
        self._provider = provider
        self._events = events
        self._catalog = catalog
        self._retry_after = retry_after
        self._clock = clock
        self._insert = _INSERTS[engine.dialect.name]
        self._prune_at = float("-inf")

    async def start(self) -> None:
        await upgrade(self._engine)  # the tables are resolvers/migrations' (this metadata only mirrors them)
        async with self._write() as conn:
            await self._prune(conn, self._clock())

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock, self._writer.begin() as conn:
            yield conn

    async def handle(self, source: str, event: ProviderWebhook) -> WebhookOutcome:
        """Apply a verified event once; WebhookDeferred when it cannot be applied now."""
        # A cheap look first, so a retry of a processed event does not cost provider calls;
        # the insert in the write transaction below is the one that counts.
        if await self._seen(source, event.id):
            return WebhookOutcome.DUPLICATE
        effects = await self._effects_of(event)
        now = self._clock()
        async with self._write() as conn:
            # The id first: only its own conflict means "processed before" (another process may have
            # recorded it since our look). Any other failure rolls the id back with the rest, so the
            # route answers 503 and the sender's retry applies the event.
            claimed = await conn.execute(
                self._insert(webhook_events)
                .values(provider=source, event_id=event.id, type=event.type[:64], processed_at=now)
                .on_conflict_do_nothing(index_elements=[webhook_events.c.provider, webhook_events.c.event_id])
                .returning(webhook_events.c.event_id)
            )
            if claimed.first() is None:
                return WebhookOutcome.DUPLICATE
            if effects.redemption is not None and not await self._advance(conn, effects.redemption):
                effects.redemption = None  # older than what this database has seen: keep quiet
            if now >= self._prune_at:
                await self._prune(conn, now)
        # Recorded: now tell the in-process listeners (they cannot fail).
        self._apply(effects)
        return WebhookOutcome.PROCESSED if event.data is not None else WebhookOutcome.IGNORED

    async def _prune(self, conn: AsyncConnection, now: float) -> None:
        """Forget event ids and redemption states past retention: a long-running gateway must not keep them for
        good. A delivery older than that is not retried any more, so neither can come back to be compared."""
        horizon = now - EVENT_RETENTION_SECONDS
        await conn.execute(delete(webhook_events).where(webhook_events.c.processed_at < horizon))
        await conn.execute(delete(redemption_states).where(redemption_states.c.updated_at < horizon))
        self._prune_at = now + PRUNE_INTERVAL_SECONDS

    async def _seen(self, source: str, event_id: str) -> bool:
        query = select(webhook_events.c.event_id).where(
            (webhook_events.c.provider == source) & (webhook_events.c.event_id == event_id)
        )
        async with self._engine.connect() as reader:
            return (await reader.execute(query)).first() is not None

    async def _advance(self, conn: AsyncConnection, redemption: Redemption) -> bool:
        """Record a redemption's state if it moves it forward (providers.events' rule); whether it did."""
        values = {"status": redemption.status.value, "updated_at": redemption.updated_at.timestamp()}
        inserted = await conn.execute(
            self._insert(redemption_states)
            .values(redemption_id=redemption.id, **values)
            .on_conflict_do_nothing(index_elements=[redemption_states.c.redemption_id])
            .returning(redemption_states.c.redemption_id)
        )
        if inserted.first() is not None:
            return True
        where = redemption_states.c.redemption_id == redemption.id
        # FOR UPDATE (PostgreSQL; SQLite's write transaction already excludes other writers): two deliveries
        # about one redemption compare and write one after the other, so neither can undo the other's step.
        row = (await conn.execute(select(redemption_states).where(where).with_for_update())).one()
        if not moves_forward(RedemptionStatus(row.status), row.updated_at, redemption.status, values["updated_at"]):
            return False
        await conn.execute(update(redemption_states).where(where).values(**values))
        return True

    def _apply(self, effects: _Effects) -> None:
        if effects.invalidate_catalog:
            self._catalog.invalidate()
        if effects.user_id is None:
            return
        if effects.redemption is not None:
            self._events.publish(RedemptionUpdated(user_id=effects.user_id, redemption=effects.redemption))
        if effects.balance is not None:
            self._events.publish(BalanceChanged(user_id=effects.user_id, balance=effects.balance))

    # What an event changes

    async def _effects_of(self, event: ProviderWebhook) -> _Effects:
        data = event.data
        if isinstance(data, PointsEarned):
            return _Effects(user_id=data.user_id, balance=await self._balance(data.balance))
        if isinstance(data, RedemptionSettled):
            redemption = await self._redemption(data.redemption)
            balance = await self._balance(data.balance)
            return _Effects(user_id=redemption.user_id, balance=balance, redemption=redemption)
        if isinstance(data, CatalogItemChanged):
            return _Effects(invalidate_catalog=True)
        return _Effects()

    async def _balance(self, reported: Balance) -> Balance:
        """The ledger's balance now, or the event's when the provider fails or answers with an older one."""
        try:
            (live,) = await self._provider.get_balances([reported.user_id])
        except ProviderError as exc:
            logger.warning("webhook: live balance unavailable; using the event's", extra={"error": type(exc).__name__})
            return reported
        if live.user_id != reported.user_id or live.updated_at < reported.updated_at:
            return reported  # a lagging read must not take the balance back in time
        return live

    async def _redemption(self, reported: Redemption) -> Redemption:
        """The redemption as the provider has it now: only the live one carries the gift card.

        A FULFILLED event whose card cannot be read yet (provider down, or its read still PENDING)
        is deferred, so the sender's retry delivers the card; a FAILED one has nothing to wait for.
        """
        live: Redemption | None = None
        try:
            (live,) = await self._provider.get_redemptions([reported.id])
        except ProviderError as exc:
            if reported.status is RedemptionStatus.FULFILLED:
                raise WebhookDeferred(
                    "the provider cannot be asked for the fulfilled redemption",
                    retry_after=_retry_after(exc, self._retry_after),
                ) from exc
            logger.warning(
                "webhook: live redemption unavailable; using the event's", extra={"error": type(exc).__name__}
            )
        if live is not None and live.user_id == reported.user_id and live.status in SETTLED:
            return live
        if reported.status is RedemptionStatus.FULFILLED:
            raise WebhookDeferred("the provider does not show the fulfilment yet", retry_after=self._retry_after)
        return reported


_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}  # both spell on-conflict-do-nothing


def _retry_after(error: ProviderError, default: float) -> float:
    hinted = getattr(error, "retry_after", None)  # rate-limited providers say when to come back
    return float(hinted) if isinstance(hinted, int | float) and hinted > 0 else default


__all__ = [
    "EVENT_RETENTION_SECONDS",
    "PRUNE_INTERVAL_SECONDS",
    "WebhookDeferred",
    "WebhookOutcome",
    "WebhookService",
    "redemption_states",
    "webhook_events",
]
