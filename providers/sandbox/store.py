"""The sandbox's durable ledger: an SQLite file behind SQLAlchemy Core's async engine.

`SandboxStore` owns the engine and hands out `Ledger`s bound to one transaction;
writes take SQLite's write lock up front so concurrent writers queue instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, insert, select, text, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from providers.base import (
    Balance,
    GiftCard,
    Redemption,
    RedemptionStatus,
    Transaction,
    TransactionKind,
    TransactionPage,
)
from providers.errors import PointsLimitExceeded
from providers.sandbox.schema import metadata, redemptions, transactions, users
from providers.sql import create_engine, transaction_page, writer

WELCOME_DESCRIPTION = "Welcome bonus"
# The most points an account holds, available and pending together: GraphQL's Int. Counting the pending
# points too means a refund of a failed redemption always fits.
MAX_BALANCE = 2**31 - 1
ENGINE_LOGGING_NAME = "sandbox"


@dataclass(frozen=True, slots=True)
class EffectCounts:
    redemptions: int
    redeem_transactions: int
    redemptions_by_key: dict[str, int]


class StoreClosedError(RuntimeError):
    """The store was used before open() or after close()."""


class SandboxStore:
    """Opens the database file and runs read or write transactions on it."""

    def __init__(self, database_url: str) -> None:
        self._database_url = database_url
        self._engine: AsyncEngine | None = None
        self._writer: AsyncEngine | None = None
        # One writer at a time inside this process: SQLite would serialise them anyway, but
        # through busy-wait retries; queueing on a lock is cheaper and fair.
        self.write_lock = asyncio.Lock()

    @property
    def is_open(self) -> bool:
        return self._engine is not None

    async def open(self) -> None:
        if self._engine is not None:
            return
        engine = create_engine(self._database_url, logging_name=ENGINE_LOGGING_NAME)
        self._engine = engine
        self._writer = writer(engine)
        try:
            async with self.write() as ledger:
                await ledger.connection.run_sync(metadata.create_all)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        engine, self._engine, self._writer = self._engine, None, None
        if engine is not None:
            await engine.dispose()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[Ledger]:
        """A deferred transaction: a consistent snapshot that never blocks writers."""
        async with self._require(self._engine).begin() as conn:
            yield Ledger(conn)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[Ledger]:
        """BEGIN IMMEDIATE: the write lock is held from the first statement until commit."""
        async with self.write_lock:
            async with self._require(self._writer).begin() as conn:
                yield Ledger(conn)

    @staticmethod
    def _require(engine: AsyncEngine | None) -> AsyncEngine:
        if engine is None:
            raise StoreClosedError("the sandbox store is not open")
        return engine


class Ledger:
    """The ledger's operations, all inside the one transaction of `connection`."""

    def __init__(self, connection: AsyncConnection) -> None:
        self.connection = connection

    async def ping(self) -> None:
        await self.connection.execute(text("SELECT 1"))

    # Users and balances

    async def known_users(self, user_ids: Collection[str]) -> set[str]:
        rows = await self.connection.execute(select(users.c.user_id).where(users.c.user_id.in_(set(user_ids))))
        return set(rows.scalars())

    async def enrol(self, user_id: str, starting_balance: int, now: datetime) -> bool:
        """Create the user unless it exists; True when this call created it (and granted the bonus)."""
        created = await self.connection.execute(
            sqlite_insert(users)
            .values(user_id=user_id, available=starting_balance, updated_at=now)
            .on_conflict_do_nothing(index_elements=[users.c.user_id])
        )
        if created.rowcount != 1:
            return False
        if starting_balance:
            await self.record(
                user_id=user_id,
                kind=TransactionKind.EARN,
                points=starting_balance,
                balance_after=starting_balance,
                description=WELCOME_DESCRIPTION,
                now=now,
            )
        return True

    async def balances(self, user_ids: Collection[str]) -> dict[str, Balance]:
        wanted = set(user_ids)
        pending_rows = await self.connection.execute(
            select(redemptions.c.user_id, func.sum(redemptions.c.points))
            .where(redemptions.c.user_id.in_(wanted), redemptions.c.status == RedemptionStatus.PENDING.value)
            .group_by(redemptions.c.user_id)
        )
        pending = {user_id: int(total) for user_id, total in pending_rows}
        rows = await self.connection.execute(select(users).where(users.c.user_id.in_(wanted)))
        return {
            row.user_id: Balance(
                user_id=row.user_id,
                available=row.available,
                pending=pending.get(row.user_id, 0),
                updated_at=row.updated_at,
            )
            for row in rows
        }

    async def balance(self, user_id: str) -> Balance:
        return (await self.balances([user_id]))[user_id]

    async def debit(self, user_id: str, points: int, now: datetime) -> int | None:
        """Take `points` if the balance covers them; the new balance, or None when it does not."""
        # The condition lives in the UPDATE itself so no interleaving, in this process or
        # another one sharing the file, can take the balance below zero.
        result = await self.connection.execute(
            update(users)
            .where(users.c.user_id == user_id, users.c.available >= points)
            .values(available=users.c.available - points, updated_at=now)
            .returning(users.c.available)
        )
        return result.scalar_one_or_none()

    async def credit(self, user_id: str, points: int, now: datetime) -> int:
        """Add `points` to a known user's balance; the new balance, or PointsLimitExceeded past MAX_BALANCE."""
        pending = (
            select(func.coalesce(func.sum(redemptions.c.points), 0))
            .where(redemptions.c.user_id == user_id, redemptions.c.status == RedemptionStatus.PENDING.value)
            .scalar_subquery()
        )
        result = await self.connection.execute(
            update(users)
            .where(users.c.user_id == user_id, users.c.available + pending <= MAX_BALANCE - points)
            .values(available=users.c.available + points, updated_at=now)
            .returning(users.c.available)
        )
        available = result.scalar_one_or_none()
        if available is None:
            raise PointsLimitExceeded(
                f"the credit would take the balance past {MAX_BALANCE} points", provider="sandbox"
            )
        return available

    # Transactions

    async def record(
        self,
        *,
        user_id: str,
        kind: TransactionKind,
        points: int,
        balance_after: int,
        description: str,
        now: datetime,
        redemption_id: str | None = None,
    ) -> Transaction:
        tx_id = f"tx_{uuid.uuid4().hex}"
        result = await self.connection.execute(
            insert(transactions)
            .values(
                id=tx_id,
                user_id=user_id,
                kind=kind.value,
                points=points,
                balance_after=balance_after,
                description=description,
                created_at=now,
                redemption_id=redemption_id,
            )
            .returning(transactions.c.position)
        )
        return Transaction(
            id=tx_id,
            position=result.scalar_one(),
            user_id=user_id,
            kind=kind,
            points=points,
            balance_after=balance_after,
            description=description,
            created_at=now,
            redemption_id=redemption_id,
        )

    async def transactions(
        self,
        user_id: str,
        *,
        kinds: frozenset[TransactionKind] | None,
        older_than: int | None,
        newer_than: int | None,
        limit: int,
        from_oldest: bool,
    ) -> TransactionPage:
        return await transaction_page(
            self.connection,
            transactions,
            _transaction,
            user_id,
            kinds=kinds,
            older_than=older_than,
            newer_than=newer_than,
            limit=limit,
            from_oldest=from_oldest,
        )

    async def transactions_by_id(self, ids: Collection[str]) -> dict[str, Transaction]:
        rows = await self.connection.execute(select(transactions).where(transactions.c.id.in_(set(ids))))
        return {row.id: _transaction(row) for row in rows}

    # Redemptions

    async def redemption_by_key(self, idempotency_key: str) -> tuple[Redemption, str] | None:
        """The redemption made under this idempotency key, with the fingerprint of its request."""
        row = (
            await self.connection.execute(select(redemptions).where(redemptions.c.idempotency_key == idempotency_key))
        ).first()
        return None if row is None else (_redemption(row), row.request_fingerprint)

    async def add_redemption(
        self,
        *,
        user_id: str,
        reward_id: str,
        face_value: Decimal,
        currency_code: str,
        points: int,
        idempotency_key: str,
        fingerprint: str,
        now: datetime,
    ) -> Redemption:
        redemption = Redemption(
            id=f"rd_{uuid.uuid4().hex}",
            user_id=user_id,
            reward_id=reward_id,
            face_value=face_value,
            currency_code=currency_code,
            points=points,
            status=RedemptionStatus.PENDING,
            gift_card=None,
            failure_reason=None,
            created_at=now,
            updated_at=now,
        )
        await self.connection.execute(
            insert(redemptions).values(
                id=redemption.id,
                user_id=user_id,
                reward_id=reward_id,
                face_value=str(face_value),
                currency_code=currency_code,
                points=points,
                status=redemption.status.value,
                created_at=now,
                updated_at=now,
                idempotency_key=idempotency_key,
                request_fingerprint=fingerprint,
            )
        )
        return redemption

    async def settle(
        self,
        redemption_id: str,
        *,
        status: RedemptionStatus,
        now: datetime,
        gift_card: GiftCard | None = None,
        failure_reason: str | None = None,
    ) -> Redemption | None:
        """Move a PENDING redemption to `status`; None when it is no longer pending (settled elsewhere)."""
        card = gift_card or GiftCard(code=None, pin=None, claim_url=None, expires_at=None)
        row = (
            await self.connection.execute(
                update(redemptions)
                .where(redemptions.c.id == redemption_id, redemptions.c.status == RedemptionStatus.PENDING.value)
                .values(
                    status=status.value,
                    code=card.code,
                    pin=card.pin,
                    claim_url=card.claim_url,
                    expires_at=card.expires_at,
                    failure_reason=failure_reason,
                    updated_at=now,
                )
                .returning(*redemptions.c)
            )
        ).first()
        return None if row is None else _redemption(row)

    async def redemptions(self, ids: Collection[str]) -> dict[str, Redemption]:
        rows = await self.connection.execute(select(redemptions).where(redemptions.c.id.in_(set(ids))))
        return {row.id: _redemption(row) for row in rows}

    async def effect_counts(self) -> EffectCounts:
        """What the provider has done so far: redemptions made and REDEEM debits recorded (for tests)."""
        by_key = {
            key: int(count)
            for key, count in await self.connection.execute(
                select(redemptions.c.idempotency_key, func.count()).group_by(redemptions.c.idempotency_key)
            )
        }
        debits = await self.connection.scalar(
            select(func.count()).select_from(transactions).where(transactions.c.kind == TransactionKind.REDEEM.value)
        )
        return EffectCounts(
            redemptions=sum(by_key.values()), redeem_transactions=debits or 0, redemptions_by_key=by_key
        )

    async def pending_redemptions(self) -> list[Redemption]:
        rows = await self.connection.execute(
            select(redemptions)
            .where(redemptions.c.status == RedemptionStatus.PENDING.value)
            .order_by(redemptions.c.created_at)
        )
        return [_redemption(row) for row in rows]


def _transaction(row: Row[Any]) -> Transaction:
    return Transaction(
        id=row.id,
        position=row.position,
        user_id=row.user_id,
        kind=TransactionKind(row.kind),
        points=row.points,
        balance_after=row.balance_after,
        description=row.description,
        created_at=row.created_at,
        redemption_id=row.redemption_id,
    )


def _redemption(row: Row[Any]) -> Redemption:
    status = RedemptionStatus(row.status)
    card = (
        GiftCard(code=row.code, pin=row.pin, claim_url=row.claim_url, expires_at=row.expires_at)
        if status is RedemptionStatus.FULFILLED
        else None
    )
    return Redemption(
        id=row.id,
        user_id=row.user_id,
        reward_id=row.reward_id,
        face_value=Decimal(row.face_value),
        currency_code=row.currency_code,
        points=row.points,
        status=status,
        gift_card=card,
        failure_reason=row.failure_reason,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
