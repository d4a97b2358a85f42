"""`SandboxProvider`: the `RewardsProvider` port answered in-process from the catalog and the SQLite ledger."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from typing import Concatenate, ParamSpec, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from providers.base import (
    Balance,
    CallCounts,
    RedeemRequest,
    RedeemResult,
    Redemption,
    Reward,
    RewardAvailability,
    RewardPage,
    Transaction,
    TransactionKind,
    TransactionPage,
)
from providers.errors import IdempotencyConflict, InsufficientPoints, ProviderError, ProviderUnavailable
from providers.events import BalanceChanged, EventHub, RedemptionUpdated
from providers.rules import fingerprint, validate
from providers.sandbox.catalog import build_catalog, failing_reward_ids, money
from providers.sandbox.config import SandboxConfig, SandboxFaults
from providers.sandbox.fulfilment import Fulfiller, utcnow
from providers.sandbox.store import EffectCounts, SandboxStore, StoreClosedError

MAX_PAGE_SIZE = 100
GRANT_DESCRIPTION = "Points granted"

P = ParamSpec("P")
R = TypeVar("R")


def _storage_errors(
    method: Callable[Concatenate[SandboxProvider, P], Awaitable[R]],
) -> Callable[Concatenate[SandboxProvider, P], Awaitable[R]]:
    """Turn storage errors into ProviderUnavailable."""
    operation = method.__name__

    @functools.wraps(method)
    async def wrapper(self: SandboxProvider, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(self, *args, **kwargs)
        except StoreClosedError as exc:
            raise ProviderUnavailable("the sandbox provider is not started", provider=self.name) from exc
        except (SQLAlchemyError, sqlite3.Error) as exc:
            # The driver's own message ("database is locked") helps; the engine hides SQL parameters.
            reason = getattr(exc, "orig", None) or type(exc).__name__
            raise ProviderUnavailable(f"sandbox {operation} failed: {reason}", provider=self.name) from exc

    return wrapper


def _port_operation(
    method: Callable[Concatenate[SandboxProvider, P], Awaitable[R]],
) -> Callable[Concatenate[SandboxProvider, P], Awaitable[R]]:
    """Count the call, inject the configured faults, and turn storage errors into ProviderUnavailable."""
    operation = method.__name__
    guarded = _storage_errors(method)

    @functools.wraps(method)
    async def wrapper(self: SandboxProvider, /, *args: P.args, **kwargs: P.kwargs) -> R:
        self.calls.add(operation)
        await self.faults.apply(operation, provider=self.name)
        return await guarded(self, *args, **kwargs)

    return wrapper


class SandboxProvider:
    """A faithful, self-contained reward provider for development and tests."""

    name = "sandbox"

    def __init__(
        self,
        *,
        database_url: str,
        events: EventHub,
        config: SandboxConfig = SandboxConfig(),
        faults: SandboxFaults | None = None,
    ) -> None:
        self.config = config
        self.faults = faults if faults is not None else SandboxFaults()
        self.calls = CallCounts()
        self.catalog: tuple[Reward, ...] = build_catalog(config.catalog_seed, config.catalog_size)
        self._rewards = {reward.id: reward for reward in self.catalog}
        self._positions = {reward.id: index for index, reward in enumerate(self.catalog)}
        self._events = events
        self._store = SandboxStore(database_url)
        self._fulfiller = Fulfiller(
            store=self._store, events=events, rewards=self._rewards, failing=failing_reward_ids(self.catalog)
        )
        self._lifecycle = asyncio.Lock()

    # Lifecycle

    async def start(self) -> None:
        async with self._lifecycle:
            if self._store.is_open:
                return
            try:
                await self._store.open()
                async with self._store.read() as ledger:
                    pending = await ledger.pending_redemptions()
            except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
                await self._store.close()
                raise ProviderUnavailable(f"the sandbox database cannot be opened: {exc}", provider=self.name) from exc
            self._fulfiller.open()
            now = utcnow()
            for redemption in pending:
                due = redemption.created_at.timestamp() + self.config.fulfilment_delay
                self._fulfiller.schedule(redemption.id, due - now.timestamp())

    async def aclose(self) -> None:
        async with self._lifecycle:
            await self._fulfiller.close()
            await self._store.close()

    def set_availability(self, reward_id: str, availability: RewardAvailability) -> Reward:
        """A knob for tests and demos: the provider's stock changes, as a real one's does."""
        index = self._positions[reward_id]
        reward = dataclasses.replace(self._rewards[reward_id], availability=availability)
        self._rewards[reward_id] = reward  # the fulfiller shares this dict
        self.catalog = (*self.catalog[:index], reward, *self.catalog[index + 1 :])
        return reward

    @_storage_errors
    async def grant(
        self, user_id: str, points: int, description: str = GRANT_DESCRIPTION
    ) -> tuple[Transaction, Balance]:
        """Points earned outside the app (a purchase, a promotion): an EARN entry and the new balance.

        Not a port operation: the gateway never credits points, the provider's ledger does. A user
        seen for the first time is enrolled first, as every port operation would.
        """
        if not user_id:
            raise ValueError("user_id must not be empty")
        if points <= 0:
            raise ValueError("points must be positive")
        now = utcnow()
        async with self._store.write() as ledger:
            await ledger.enrol(user_id, self.config.starting_balance, now)
            available = await ledger.credit(user_id, points, now)
            transaction = await ledger.record(
                user_id=user_id,
                kind=TransactionKind.EARN,
                points=points,
                balance_after=available,
                description=description or GRANT_DESCRIPTION,
                now=now,
            )
            balance = await ledger.balance(user_id)
        self._events.publish(BalanceChanged(user_id=user_id, balance=balance))
        return transaction, balance

    @_storage_errors
    async def current_balance(self, user_id: str) -> Balance | None:
        """The user's balance as the ledger holds it now, without enrolling or counting a port call."""
        async with self._store.read() as ledger:
            return (await ledger.balances([user_id])).get(user_id)

    @_storage_errors
    async def effect_counts(self) -> EffectCounts:
        """Provider-side effects so far (redemptions, REDEEM debits, redemptions per idempotency key)."""
        async with self._store.read() as ledger:
            return await ledger.effect_counts()

    @property
    def fulfilments_in_flight(self) -> int:
        """Background fulfilments not yet settled (for tests and health reporting)."""
        return self._fulfiller.active

    # Port operations

    @_port_operation
    async def check(self) -> None:
        async with self._store.read() as ledger:
            await ledger.ping()

    @_port_operation
    async def list_rewards(self, *, cursor: str | None, limit: int) -> RewardPage:
        limit = min(max(limit, 1), MAX_PAGE_SIZE)
        if cursor is None:
            start = 0
        else:
            # The cursor is the last id of the previous page; callers treat it as opaque.
            after = self._positions.get(cursor)
            if after is None:
                raise ProviderError("invalid cursor", provider=self.name)
            start = after + 1
        items = self.catalog[start : start + limit]
        more = start + limit < len(self.catalog)
        return RewardPage(items=items, next_cursor=items[-1].id if more and items else None)

    @_port_operation
    async def get_rewards(self, ids: Sequence[str]) -> list[Reward | None]:
        return [self._rewards.get(reward_id) for reward_id in ids]

    @_port_operation
    async def get_balances(self, user_ids: Sequence[str]) -> list[Balance]:
        if not user_ids:
            return []
        await self._enrol(user_ids)
        async with self._store.read() as ledger:
            balances = await ledger.balances(user_ids)
        return [balances[user_id] for user_id in user_ids]

    @_port_operation
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
        await self._enrol([user_id])
        async with self._store.read() as ledger:
            return await ledger.transactions(
                user_id,
                kinds=kinds,
                older_than=older_than,
                newer_than=newer_than,
                limit=max(limit, 0),
                from_oldest=from_oldest,
            )

    @_port_operation
    async def get_transactions(self, ids: Sequence[str]) -> list[Transaction | None]:
        if not ids:
            return []
        async with self._store.read() as ledger:
            found = await ledger.transactions_by_id(ids)
        return [found.get(transaction_id) for transaction_id in ids]

    @_port_operation
    async def get_redemptions(self, ids: Sequence[str]) -> list[Redemption | None]:
        if not ids:
            return []
        async with self._store.read() as ledger:
            found = await ledger.redemptions(ids)
        return [found.get(redemption_id) for redemption_id in ids]

    @_port_operation
    async def redeem(self, request: RedeemRequest) -> RedeemResult:
        request_fingerprint = fingerprint(request)
        now = utcnow()
        # One write transaction from the idempotency lookup to the ledger entry: a retry racing
        # the original waits for the lock and then finds its redemption.
        async with self._store.write() as ledger:
            previous = await ledger.redemption_by_key(request.idempotency_key)
            if previous is not None:
                redemption, previous_fingerprint = previous
                if previous_fingerprint != request_fingerprint:
                    raise IdempotencyConflict(
                        "the idempotency key was already used for a different redemption", provider=self.name
                    )
                return RedeemResult(redemption, await ledger.balance(redemption.user_id), replayed=True)

            reward = validate(request, self._rewards.get(request.reward_id), provider=self.name)
            await ledger.enrol(request.user_id, self.config.starting_balance, now)
            available = await ledger.debit(request.user_id, request.points, now)
            if available is None:
                # Raising rolls the transaction back: not even the enrolment is kept.
                raise InsufficientPoints(f"{request.points} points are not available", provider=self.name)
            face_value = money(request.face_value)
            redemption = await ledger.add_redemption(
                user_id=request.user_id,
                reward_id=reward.id,
                face_value=face_value,
                currency_code=reward.currency_code,
                points=request.points,
                idempotency_key=request.idempotency_key,
                fingerprint=request_fingerprint,
                now=now,
            )
            await ledger.record(
                user_id=request.user_id,
                kind=TransactionKind.REDEEM,
                points=-request.points,
                balance_after=available,
                description=f"Redeemed {reward.name} {face_value} {reward.currency_code}",
                now=now,
                redemption_id=redemption.id,
            )
            balance = await ledger.balance(request.user_id)

        self._events.publish(BalanceChanged(user_id=request.user_id, balance=balance))
        self._events.publish(RedemptionUpdated(user_id=request.user_id, redemption=redemption))
        self._fulfiller.schedule(redemption.id, self.config.fulfilment_delay)
        return RedeemResult(redemption, balance)

    # Helpers

    async def _enrol(self, user_ids: Sequence[str]) -> None:
        """Enrol the users not seen before; safe when several callers race on the same user."""
        async with self._store.read() as ledger:
            missing = set(user_ids) - await ledger.known_users(user_ids)
        if not missing:
            return
        now = utcnow()
        async with self._store.write() as ledger:
            for user_id in sorted(missing):
                await ledger.enrol(user_id, self.config.starting_balance, now)
