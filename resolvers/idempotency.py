"""Durable idempotency keys for `redeem`, scoped to the user, kept at least 24 hours.

A key is claimed before any side effect. A claim names its request's fingerprint,
so a reuse with other input is recognised; it holds a lease, so an attempt that
died mid-flight can be taken over by a retry instead of blocking the key forever.
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

from sqlalchemy import Column, Float, MetaData, String, Table, Text, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from providers.sql import writer

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
        async with self._write() as conn:
            await conn.run_sync(metadata.create_all)

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
                # The attempt holding the key died; the retry carries on with the same key.
                await conn.execute(
                    update(idempotency_keys).where(where).values(lease_until=now + self._lease, claim_token=token)
                )
                return Claim(user_id, key, ClaimState.ACQUIRED, token=token)
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
        """Forget an unfinished claim: nothing was decided, so the key may be used again."""
        async with self._write() as conn:
            await conn.execute(delete(idempotency_keys).where(self._held_by(claim)))

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
