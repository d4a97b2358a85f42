"""Durable idempotency keys for `redeem`, scoped to the user, kept at least 24 hours.

A key is claimed before any side effect. A claim names its request's fingerprint,
so a reuse with other input is recognised; it holds a lease, so an attempt that
died mid-flight can be taken over by a retry instead of blocking the key forever.
The exact provider request is recorded before it is sent: whoever takes a key over
(a retry or the reconciler) resends that request, never a recomputed one, and a key
whose request may have reached the provider is never released, only settled.
"""

from __future__ import annotations

import asyncio
import enum
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from providers.sql import writer
from resolvers.migrate import upgrade

metadata = MetaData()

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("user_id", String(255), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("claim_token", String(32), nullable=False),
    Column("payload", Text, nullable=True),
    Column("request", Text, nullable=True),  # the provider request, once it may have been sent
    Column("attempts", Integer, nullable=False, default=0),  # deferrals: the reconciler backs off by them
    Column("lease_until", Float, nullable=False),
    Column("expires_at", Float, nullable=False, index=True),
    Column("created_at", Float, nullable=False),
)


class ClaimState(enum.Enum):
    ACQUIRED = "acquired"  # this caller owns the key and must complete or release it
    DONE = "done"  # a result is stored: replay it
    IN_PROGRESS = "in_progress"  # another attempt holds the key right now
    CONFLICT = "conflict"  # the key was used with a different request


@dataclass(frozen=True, slots=True)
class Claim:
    user_id: str
    key: str
    state: ClaimState
    payload: dict[str, Any] | None = None
    token: str | None = None  # set when ACQUIRED: names this holder, so a holder whose lease
    # was taken over can neither complete nor release the key under the new holder
    request: dict[str, Any] | None = None  # set when ACQUIRED by a takeover after the request was recorded
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Unsettled:
    """A key whose request may have reached the provider and whose lease has run out: the reconciler's work."""

    user_id: str
    key: str
    fingerprint: str


class IdempotencyStore:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        ttl_seconds: float,
        lease_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._writer = writer(engine)
        # One writer at a time in this process; BEGIN IMMEDIATE orders writers across processes.
        self._write_lock = asyncio.Lock()
        self._ttl = ttl_seconds
        self._lease = lease_seconds
        self._clock = clock

    async def start(self) -> None:
        async with self._write_lock:  # the tables are resolvers/migrations' (this metadata only mirrors them)
            await upgrade(self._engine)

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        async with self._write_lock, self._writer.begin() as conn:
            yield conn

    async def claim(self, user_id: str, key: str, fingerprint: str) -> Claim:
        while True:
            try:
                return await self._claim_once(user_id, key, fingerprint)
            except IntegrityError:
                continue  # another writer inserted the key between our read and insert: read it

    async def _claim_once(self, user_id: str, key: str, fingerprint: str) -> Claim:
        now = self._clock()
        token = uuid.uuid4().hex
        where = (idempotency_keys.c.user_id == user_id) & (idempotency_keys.c.key == key)
        async with self._write() as conn:
            row = (await conn.execute(select(idempotency_keys).where(where))).first()
            if row is not None and row.expires_at < now and row.state == ClaimState.DONE.value:
                await conn.execute(delete(idempotency_keys).where(where))
                row = None
            if row is None:
                await conn.execute(
                    idempotency_keys.insert().values(
                        user_id=user_id,
                        key=key,
                        fingerprint=fingerprint,
                        state=ClaimState.IN_PROGRESS.value,
                        claim_token=token,
                        payload=None,
                        request=None,
                        attempts=0,
                        lease_until=now + self._lease,
                        expires_at=now + self._ttl,
                        created_at=now,
                    )
                )
                return Claim(user_id, key, ClaimState.ACQUIRED, token=token)
            if row.fingerprint != fingerprint:
                return Claim(user_id, key, ClaimState.CONFLICT)
            if row.state == ClaimState.DONE.value:
                return Claim(user_id, key, ClaimState.DONE, json.loads(row.payload))
            if row.lease_until < now:
                # The attempt holding the key died; the retry carries on with the same key. Compare-and-set on
                # the old holder's token: on PostgreSQL two processes can read the lapsed lease at once, and
                # only the one whose UPDATE still finds that token takes the key over.
                taken = await conn.execute(
                    update(idempotency_keys)
                    .where(
                        where,
                        idempotency_keys.c.state == ClaimState.IN_PROGRESS.value,
                        idempotency_keys.c.claim_token == row.claim_token,
                    )
                    .values(lease_until=now + self._lease, claim_token=token)
                    .returning(idempotency_keys.c.request, idempotency_keys.c.attempts)  # as they are now
                )
                current = taken.first()
                if current is None:
                    return Claim(user_id, key, ClaimState.IN_PROGRESS)
                request = None if current.request is None else json.loads(current.request)
                return Claim(user_id, key, ClaimState.ACQUIRED, token=token, request=request, attempts=current.attempts)
            return Claim(user_id, key, ClaimState.IN_PROGRESS)

    async def complete(self, claim: Claim, payload: dict[str, Any]) -> bool:
        """Store the result to replay, kept for the TTL from now; False if the claim was lost."""
        async with self._write() as conn:
            result = await conn.execute(
                update(idempotency_keys)
                .where(self._held_by(claim))
                .values(
                    state=ClaimState.DONE.value,
                    payload=json.dumps(payload, separators=(",", ":")),
                    expires_at=self._clock() + self._ttl,
                )
            )
        return result.rowcount == 1

    async def release(self, claim: Claim) -> None:
        """Forget an unfinished claim: nothing was decided, so the key may be used again.

        Only for a request that certainly never took effect at the provider (not sent, or refused);
        one whose outcome is unknown is deferred instead.
        """
        async with self._write() as conn:
            await conn.execute(delete(idempotency_keys).where(self._held_by(claim)))

    async def record_request(self, claim: Claim, request: dict[str, Any]) -> bool:
        """Remember the exact provider request before sending it; False if the claim was lost."""
        async with self._write() as conn:
            result = await conn.execute(
                update(idempotency_keys)
                .where(self._held_by(claim))
                .values(request=json.dumps(request, separators=(",", ":")))
            )
        return result.rowcount == 1

    async def defer(self, claim: Claim, delay: float) -> bool:
        """Give the key up without an outcome: the reconciler (or a retry) takes it over after `delay`."""
        async with self._write() as conn:
            result = await conn.execute(
                update(idempotency_keys)
                .where(self._held_by(claim))
                .values(lease_until=self._clock() + delay, attempts=idempotency_keys.c.attempts + 1)
            )
        return result.rowcount == 1

    async def unsettled(self, *, limit: int = 50) -> list[Unsettled]:
        """Keys with a recorded request, no outcome, and no live holder: oldest lease first."""
        async with self._engine.connect() as conn:
            rows = await conn.execute(
                select(idempotency_keys.c.user_id, idempotency_keys.c.key, idempotency_keys.c.fingerprint)
                .where(
                    (idempotency_keys.c.state == ClaimState.IN_PROGRESS.value)
                    & idempotency_keys.c.request.is_not(None)
                    & (idempotency_keys.c.lease_until < self._clock())
                )
                .order_by(idempotency_keys.c.lease_until)
                .limit(limit)
            )
            return [Unsettled(row.user_id, row.key, row.fingerprint) for row in rows]

    async def drop_abandoned(self, *, older_than: float) -> int:
        """Delete claims that died before recording a request (nothing was sent) and lapsed long ago."""
        async with self._write() as conn:
            result = await conn.execute(
                delete(idempotency_keys).where(
                    (idempotency_keys.c.state == ClaimState.IN_PROGRESS.value)
                    & idempotency_keys.c.request.is_(None)
                    & (idempotency_keys.c.lease_until < self._clock() - older_than)
                )
            )
        return result.rowcount or 0

    @staticmethod
    def _held_by(claim: Claim) -> Any:
        if claim.state is not ClaimState.ACQUIRED or claim.token is None:
            raise ValueError("only an acquired claim can be completed or released")
        return (
            (idempotency_keys.c.user_id == claim.user_id)
            & (idempotency_keys.c.key == claim.key)
            & (idempotency_keys.c.state == ClaimState.IN_PROGRESS.value)
            & (idempotency_keys.c.claim_token == claim.token)
        )

    async def purge_expired(self) -> int:
        async with self._write() as conn:
            result = await conn.execute(
                delete(idempotency_keys).where(
                    (idempotency_keys.c.expires_at < self._clock())
                    & (idempotency_keys.c.state == ClaimState.DONE.value)
                )
            )
        return result.rowcount or 0
