"""The points ledger: balances, an append-only transaction log and redemptions, in the gateway's database.

Every write is one database transaction. A debit is a conditional UPDATE (`available >= points`), so no
interleaving, in this process or another sharing the database, takes a balance below zero.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from providers.base import (
    Balance,
    GiftCard,
    RedeemRequest,
    Redemption,
    RedemptionStatus,
    Reward,
    Transaction,
    TransactionKind,
    TransactionPage,
)
from providers.errors import IdempotencyConflict, InsufficientPoints, PointsLimitExceeded, ProviderUnavailable
from providers.ledger.cipher import CardCipher, CardUnreadable
from providers.ledger.migrate import upgrade
from providers.ledger.models import GrantResult, ReserveResult, SettleResult, Unsettled, dump_reward, load_reward
from providers.ledger.tables import accounts, grant_events, redemptions, transactions
from providers.sql import transaction_page, writer

logger = logging.getLogger(__name__)

PROVIDER = "ledger"
WELCOME_DESCRIPTION = "Welcome bonus"
SOURCE_ENROLMENT = "ledger:enrolment"
SOURCE_REDEMPTION = "ledger:redemption"
# The most points an account may hold, available and reserved together: GraphQL's Int is 32-bit, and so
# are the columns on PostgreSQL. Grants stop here; reserves and refunds only move points within it.
MAX_POINTS = 2**31 - 1
# Dialects whose INSERT ... ON CONFLICT DO NOTHING we use (the same statement on both).
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}


def utcnow() -> datetime:
    return datetime.now(UTC)


class PointsLedger:
    def __init__(
        self,
        engine: AsyncEngine,
        cipher: CardCipher,
        *,
        starting_balance: int = 0,
        clock: Callable[[], datetime] = utcnow,
        first_check_delay: float = 0.0,
    ) -> None:
        """`first_check_delay`: how long after a reserve `unsettled()` leaves a PENDING redemption to its saga.

        0 (the default): due at once, so a reserve whose process died is found by the next reconciler pass;
        the saga then `defer()`s it. A delay closes the window in which a reconciler could look it up too early.
        """
        if engine.dialect.name not in _INSERTS:
            raise ValueError(f"the points ledger supports SQLite and PostgreSQL, not {engine.dialect.name}")
        if starting_balance < 0:
            raise ValueError("starting_balance must not be negative")
        self._engine = engine
        self._writer = writer(engine)
        self._insert = _INSERTS[engine.dialect.name]
        # One writer at a time in this process: SQLite would serialise them anyway, but through busy waits.
        self._write_lock = asyncio.Lock()
        self._cipher = cipher
        self._starting_balance = starting_balance
        self._clock = clock
        self._first_check_delay = timedelta(seconds=first_check_delay)

    def __repr__(self) -> str:
        return f"PointsLedger({self._engine.dialect.name})"

    async def start(self) -> None:
        await upgrade(self._engine)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock, self._writer.begin() as conn:
            yield conn

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        async with self._engine.begin() as conn:  # one snapshot for the whole read
            yield conn

    # Balances

    async def balances(self, user_ids: Sequence[str]) -> list[Balance]:
        """Balances in the order asked; a user seen for the first time is enrolled."""
        async with self._read() as conn:
            found = await self._balances(conn, user_ids)
        if len(found) < len(set(user_ids)):
            async with self._write() as conn:
                now = self._clock()
                for user_id in sorted(set(user_ids) - found.keys()):
                    await self._enrol(conn, user_id, now)
                found = await self._balances(conn, user_ids)
        return [found[user_id] for user_id in user_ids]

    async def _balances(self, conn: AsyncConnection, user_ids: Collection[str]) -> dict[str, Balance]:
        wanted = set(user_ids)
        pending_rows = await conn.execute(
            select(redemptions.c.user_id, func.sum(redemptions.c.points))
            .where(redemptions.c.user_id.in_(wanted), redemptions.c.status == RedemptionStatus.PENDING.value)
            .group_by(redemptions.c.user_id)
        )
        pending = {user_id: int(total) for user_id, total in pending_rows}
        rows = await conn.execute(select(accounts).where(accounts.c.user_id.in_(wanted)))
        return {
            row.user_id: Balance(row.user_id, row.available, pending.get(row.user_id, 0), row.updated_at)
            for row in rows
        }

    async def _balance(self, conn: AsyncConnection, user_id: str) -> Balance:
        return (await self._balances(conn, [user_id]))[user_id]

    async def _enrol(self, conn: AsyncConnection, user_id: str, now: datetime) -> None:
        created = await conn.execute(
            self._insert(accounts)
            .values(user_id=user_id, available=self._starting_balance, created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=[accounts.c.user_id])
            .returning(accounts.c.user_id)
        )
        if created.first() is not None and self._starting_balance > 0:
            await self._record(
                conn,
                user_id=user_id,
                kind=TransactionKind.EARN,
                points=self._starting_balance,
                balance_after=self._starting_balance,
                description=WELCOME_DESCRIPTION,
                source=SOURCE_ENROLMENT,
                now=now,
            )

    async def _debit(self, conn: AsyncConnection, user_id: str, points: int, now: datetime) -> int | None:
        """The new balance, or None when the balance does not cover `points` (nothing changed)."""
        # The condition lives in the UPDATE itself: the row lock (PostgreSQL) or the write lock (SQLite)
        # makes check and debit one step.
        result = await conn.execute(
            update(accounts)
            .where(accounts.c.user_id == user_id, accounts.c.available >= points)
            .values(available=accounts.c.available - points, updated_at=now)
            .returning(accounts.c.available)
        )
        return result.scalar_one_or_none()

    async def _credit(self, conn: AsyncConnection, user_id: str, points: int, now: datetime) -> int:
        result = await conn.execute(
            update(accounts)
            .where(accounts.c.user_id == user_id)
            .values(available=accounts.c.available + points, updated_at=now)
            .returning(accounts.c.available)
        )
        return int(result.scalar_one())

    async def _credit_within_limit(self, conn: AsyncConnection, user_id: str, points: int, now: datetime) -> int | None:
        """Credit a grant; None when available and reserved points together would pass MAX_POINTS."""
        reserved = (
            select(func.coalesce(func.sum(redemptions.c.points), 0))
            .where(redemptions.c.user_id == user_id, redemptions.c.status == RedemptionStatus.PENDING.value)
            .scalar_subquery()
        )
        if points > MAX_POINTS:
            return None
        # Lock the account first (PostgreSQL; SQLite's write transaction already excludes other writers): the
        # reserved sum below is then read after any reserve that got there before us has committed.
        await conn.execute(select(accounts.c.user_id).where(accounts.c.user_id == user_id).with_for_update())
        result = await conn.execute(
            update(accounts)
            .where(accounts.c.user_id == user_id, accounts.c.available + reserved <= MAX_POINTS - points)
            .values(available=accounts.c.available + points, updated_at=now)
            .returning(accounts.c.available)
        )
        return result.scalar_one_or_none()

    # Transactions

    async def _record(
        self,
        conn: AsyncConnection,
        *,
        user_id: str,
        kind: TransactionKind,
        points: int,
        balance_after: int,
        description: str,
        source: str,
        now: datetime,
        reason: str | None = None,
        redemption_id: str | None = None,
        transaction_id: str | None = None,
    ) -> Transaction:
        tx_id = transaction_id or f"tx_{uuid.uuid4().hex}"
        result = await conn.execute(
            insert(transactions)
            .values(
                id=tx_id,
                user_id=user_id,
                kind=kind.value,
                points=points,
                balance_after=balance_after,
                description=description,
                source=source,
                reason=reason,
                redemption_id=redemption_id,
                created_at=now,
            )
            .returning(transactions.c.position)
        )
        return Transaction(
            id=tx_id,
            position=int(result.scalar_one()),
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
        kinds: frozenset[TransactionKind] | None = None,
        older_than: int | None = None,
        newer_than: int | None = None,
        limit: int,
        from_oldest: bool = False,
    ) -> TransactionPage:
        """The user's transactions strictly between the positions, newest first (see RewardsProvider)."""
        await self.balances([user_id])  # enrols a newcomer, so the welcome bonus is in the history
        async with self._read() as conn:
            return await transaction_page(
                conn,
                transactions,
                _transaction,
                user_id,
                kinds=kinds,
                older_than=older_than,
                newer_than=newer_than,
                limit=limit,
                from_oldest=from_oldest,
            )

    async def transactions_by_id(self, ids: Sequence[str]) -> list[Transaction | None]:
        async with self._read() as conn:
            rows = await conn.execute(select(transactions).where(transactions.c.id.in_(set(ids))))
            found = {row.id: _transaction(row) for row in rows}
        return [found.get(tx_id) for tx_id in ids]

    # Grants

    async def grant(
        self, user_id: str, points: int, *, reason: str, source: str, event_id: str | None = None
    ) -> GrantResult | None:
        """EARN (points > 0) or ADJUSTMENT (points < 0, never below zero); None for an event seen before."""
        if points == 0:
            raise ValueError("a grant moves at least one point")
        if not reason.strip() or not source.strip():
            raise ValueError("a grant needs a reason and a source (it is audited)")
        tx_id = f"tx_{uuid.uuid4().hex}"
        now = self._clock()
        async with self._write() as conn:
            if event_id is not None:
                # First, so a concurrent duplicate (PostgreSQL) waits on this row and then does nothing.
                claimed = await conn.execute(
                    self._insert(grant_events)
                    .values(source=source, event_id=event_id, transaction_id=tx_id, created_at=now)
                    .on_conflict_do_nothing(index_elements=[grant_events.c.source, grant_events.c.event_id])
                    .returning(grant_events.c.event_id)
                )
                if claimed.first() is None:
                    return None
            await self._enrol(conn, user_id, now)
            if points > 0:
                available: int | None = await self._credit_within_limit(conn, user_id, points, now)
                if available is None:  # the rollback also forgets the event
                    raise PointsLimitExceeded(
                        f"the grant would take the balance past {MAX_POINTS} points", provider=PROVIDER
                    )
            else:
                available = await self._debit(conn, user_id, -points, now)
                if available is None:  # the rollback also forgets the event: a smaller adjustment may follow
                    raise InsufficientPoints("the adjustment would take the balance below zero", provider=PROVIDER)
            transaction = await self._record(
                conn,
                user_id=user_id,
                kind=TransactionKind.EARN if points > 0 else TransactionKind.ADJUSTMENT,
                points=points,
                balance_after=available,
                description=reason,
                source=source,
                reason=reason,
                now=now,
                transaction_id=tx_id,
            )
            return GrantResult(transaction, await self._balance(conn, user_id))

    # Redemptions

    async def reserve(
        self, request: RedeemRequest, *, fingerprint: str, reference: str, reward: Reward
    ) -> ReserveResult:
        """Debit the points and record the redemption PENDING, once per idempotency key (a replay after)."""
        if request.points <= 0:
            raise ValueError("a redemption costs at least one point")
        snapshot = dump_reward(reward)
        try:
            return await self._reserve_once(request, fingerprint, reference, reward, snapshot)
        except IntegrityError:
            # On PostgreSQL another process may insert the same key between our look-up and insert (SQLite's
            # BEGIN IMMEDIATE rules that out): the look-up now finds it. Any other clash raises again.
            return await self._reserve_once(request, fingerprint, reference, reward, snapshot)

    async def _reserve_once(
        self, request: RedeemRequest, fingerprint: str, reference: str, reward: Reward, snapshot: str
    ) -> ReserveResult:
        now = self._clock()
        async with self._write() as conn:
            row = (
                await conn.execute(select(redemptions).where(redemptions.c.idempotency_key == request.idempotency_key))
            ).first()
            if row is not None:
                if row.request_fingerprint != fingerprint or row.user_id != request.user_id:
                    raise IdempotencyConflict(
                        "the idempotency key was already used for another redemption", provider=PROVIDER
                    )
                return ReserveResult(self._redemption(row), await self._balance(conn, row.user_id), replayed=True)
            await self._enrol(conn, request.user_id, now)
            available = await self._debit(conn, request.user_id, request.points, now)
            if available is None:  # raising rolls back the enrolment too: nothing is written
                raise InsufficientPoints("the balance does not cover the redemption", provider=PROVIDER)
            redemption_id = f"rd_{uuid.uuid4().hex}"
            values: dict[str, Any] = {
                "id": redemption_id,
                "user_id": request.user_id,
                "reward_id": request.reward_id,
                "face_value": str(request.face_value),
                "currency_code": reward.currency_code,
                "points": request.points,
                "status": RedemptionStatus.PENDING.value,
                "idempotency_key": request.idempotency_key,
                "request_fingerprint": fingerprint,
                "order_reference": reference,
                "order_id": None,
                "card_ciphertext": None,
                "failure_reason": None,
                "reward_snapshot": snapshot,
                "attempts": 0,
                "next_check_at": now + self._first_check_delay,
                "created_at": now,
                "updated_at": now,
            }
            await conn.execute(insert(redemptions).values(**values))
            await self._record(
                conn,
                user_id=request.user_id,
                kind=TransactionKind.REDEEM,
                points=-request.points,
                balance_after=available,
                description=f"Redeemed {reward.name} {request.face_value} {reward.currency_code}",
                source=SOURCE_REDEMPTION,
                now=now,
                redemption_id=redemption_id,
            )
            redemption = _redemption_row(values, card=None)
            return ReserveResult(redemption, await self._balance(conn, request.user_id))

    async def settle(
        self,
        redemption_id: str,
        *,
        status: RedemptionStatus,
        order_id: str | None = None,
        gift_card: GiftCard | None = None,
        failure_reason: str | None = None,
    ) -> SettleResult | None:
        """Settle a PENDING redemption (FAILED refunds the points); None when it is no longer pending."""
        if status is RedemptionStatus.PENDING:
            raise ValueError("settle to FULFILLED or FAILED")
        card = gift_card if status is RedemptionStatus.FULFILLED else None
        values: dict[str, Any] = {
            "status": status.value,
            "card_ciphertext": None if card is None else self._cipher.encrypt(card),
            "failure_reason": failure_reason,
            "next_check_at": None,
        }
        if order_id is not None:
            values["order_id"] = order_id
        now = self._clock()
        async with self._write() as conn:
            row = (
                await conn.execute(
                    update(redemptions)
                    .where(redemptions.c.id == redemption_id, redemptions.c.status == RedemptionStatus.PENDING.value)
                    .values(**values, updated_at=now)
                    .returning(*redemptions.c)
                )
            ).first()
            if row is None:
                return None
            if status is RedemptionStatus.FAILED:
                available = await self._credit(conn, row.user_id, row.points, now)
                await self._record(
                    conn,
                    user_id=row.user_id,
                    kind=TransactionKind.REFUND,
                    points=row.points,
                    balance_after=available,
                    description=f"Refund: {load_reward(row.reward_snapshot).name} could not be fulfilled",
                    source=SOURCE_REDEMPTION,
                    reason=failure_reason,
                    now=now,
                    redemption_id=row.id,
                )
            return SettleResult(_redemption_row(row._mapping, card=card), await self._balance(conn, row.user_id))

    async def mark_ordered(self, redemption_id: str, order_id: str) -> None:
        """Remember the provider's order id once it accepted the order (the redemption stays PENDING)."""
        async with self._write() as conn:
            await conn.execute(
                update(redemptions)
                .where(redemptions.c.id == redemption_id, redemptions.c.status == RedemptionStatus.PENDING.value)
                .values(order_id=order_id, updated_at=self._clock())
            )

    async def unsettled(self, *, limit: int = 50) -> list[Unsettled]:
        """PENDING redemptions due for a check, oldest first."""
        async with self._read() as conn:
            rows = await conn.execute(
                select(redemptions)
                .where(
                    redemptions.c.status == RedemptionStatus.PENDING.value,
                    redemptions.c.next_check_at <= self._clock(),
                )
                .order_by(redemptions.c.created_at, redemptions.c.id)
                .limit(limit)
            )
            return [
                Unsettled(
                    redemption_id=row.id,
                    user_id=row.user_id,
                    reference=row.order_reference,
                    reward_id=row.reward_id,
                    face_value=Decimal(row.face_value),
                    currency_code=row.currency_code,
                    order_id=row.order_id,
                    attempts=row.attempts,
                )
                for row in rows
            ]

    async def claim(self, redemption_id: str, lease: float) -> bool:
        """Take a due PENDING redemption for `lease` seconds; False when another worker, in this process or
        another sharing the database, took it first (or it settled). Only the claimant asks the provider."""
        now = self._clock()
        async with self._write() as conn:
            claimed = await conn.execute(
                update(redemptions)
                .where(
                    redemptions.c.id == redemption_id,
                    redemptions.c.status == RedemptionStatus.PENDING.value,
                    redemptions.c.next_check_at <= now,
                )
                .values(next_check_at=now + timedelta(seconds=lease))
                .returning(redemptions.c.id)
            )
            return claimed.first() is not None

    async def defer(self, redemption_id: str, delay: float) -> None:
        """Check this PENDING redemption again after `delay` seconds, counting the attempt."""
        async with self._write() as conn:
            await conn.execute(
                update(redemptions)
                .where(redemptions.c.id == redemption_id, redemptions.c.status == RedemptionStatus.PENDING.value)
                .values(
                    next_check_at=self._clock() + timedelta(seconds=delay),
                    attempts=redemptions.c.attempts + 1,
                )
            )

    async def redemptions_by_id(self, ids: Sequence[str]) -> list[Redemption | None]:
        """Redemptions in the order asked, cards decrypted (CardUnreadable if a key is missing)."""
        async with self._read() as conn:
            rows = list(await conn.execute(select(redemptions).where(redemptions.c.id.in_(set(ids)))))
        found = {row.id: self._redemption(row) for row in rows}
        return [found.get(redemption_id) for redemption_id in ids]

    async def redemption_by_reference(self, reference: str) -> Redemption | None:
        """The redemption placed under an order reference, without its card (never decrypted here)."""
        async with self._read() as conn:
            row = (await conn.execute(select(redemptions).where(redemptions.c.order_reference == reference))).first()
        return None if row is None else _redemption_row(row._mapping, card=None)

    async def reward_snapshot(self, redemption_id: str) -> Reward | None:
        """The reward as it was when the points were reserved."""
        async with self._read() as conn:
            snapshot = await conn.scalar(select(redemptions.c.reward_snapshot).where(redemptions.c.id == redemption_id))
        return None if snapshot is None else load_reward(snapshot)

    async def redeemed_rewards(self, reward_ids: Sequence[str]) -> dict[str, Reward]:
        """The newest copy taken at reserve of each reward ever redeemed, by id (for rewards the seller dropped)."""
        if not reward_ids:
            return {}
        async with self._read() as conn:
            rows = await conn.execute(
                select(redemptions.c.reward_id, redemptions.c.reward_snapshot)
                .where(redemptions.c.reward_id.in_(set(reward_ids)))
                .order_by(redemptions.c.created_at)
            )
            return {row.reward_id: load_reward(row.reward_snapshot) for row in rows}  # the newest wins

    def _redemption(self, row: Row[Any]) -> Redemption:
        ciphertext = row.card_ciphertext
        try:
            card = self._cipher.decrypt(ciphertext) if ciphertext is not None else None
        except CardUnreadable as exc:
            logger.error("gift card unreadable: no configured key fits", extra={"redemption_id": row.id})
            # An operator problem (a key removed from GIFTGRAPH_CARD_ENCRYPTION_KEYS too early): the card is
            # kept, and the owner sees a typed, temporary error rather than an internal one.
            raise ProviderUnavailable("the gift card cannot be read right now", provider=PROVIDER) from exc
        return _redemption_row(row._mapping, card=card)


def _redemption_row(values: Any, *, card: GiftCard | None) -> Redemption:
    status = RedemptionStatus(values["status"])
    return Redemption(
        id=values["id"],
        user_id=values["user_id"],
        reward_id=values["reward_id"],
        face_value=Decimal(values["face_value"]),
        currency_code=values["currency_code"],
        points=values["points"],
        status=status,
        gift_card=card if status is RedemptionStatus.FULFILLED else None,
        failure_reason=values["failure_reason"],
        created_at=values["created_at"],
        updated_at=values["updated_at"],
    )


def _transaction(row: Row[Any]) -> Transaction:
    return Transaction(
        id=row.id,
        position=int(row.position),
        user_id=row.user_id,
        kind=TransactionKind(row.kind),
        points=row.points,
        balance_after=row.balance_after,
        description=row.description,
        created_at=row.created_at,
        redemption_id=row.redemption_id,
    )
