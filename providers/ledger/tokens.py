"""Sellers' OAuth2 tokens in the gateway's database: a TokenStore every gateway process and restart shares.

The token is sealed with the gift-card cipher (never stored in clear); one row per client also holds the
refresh lease, so that one process at a time asks the token endpoint while the others read what it saves.
Portable SQLAlchemy Core: SQLite (BEGIN IMMEDIATE) and PostgreSQL (row-level conditional UPDATE).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from providers.base import GiftCard
from providers.errors import ProviderUnavailable
from providers.http.auth import StoredToken
from providers.ledger.cipher import CardCipher, CardUnreadable
from providers.ledger.migrate import upgrade
from providers.ledger.tables import provider_tokens as tokens
from providers.sql import writer

logger = logging.getLogger(__name__)


class SqlTokenStore:
    """The TokenStore of one seller client (`name`) in the ledger's database; times are wall-clock seconds."""

    def __init__(self, engine: AsyncEngine, cipher: CardCipher, *, name: str) -> None:
        if not name or len(name) > 255:
            raise ValueError("a token store name of 1-255 characters is required")
        self._engine = engine
        self._cipher = cipher
        self._name = name
        self._ready = False
        self._ready_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SqlTokenStore(name={self._name!r})"

    async def load(self) -> StoredToken | None:
        async with _translated("read"):
            await self._prepare()
            async with self._engine.connect() as conn:
                row = (
                    await conn.execute(
                        select(tokens.c.token_ciphertext, tokens.c.issued_at, tokens.c.expires_at).where(
                            tokens.c.name == self._name
                        )
                    )
                ).first()
        if row is None or row.token_ciphertext is None or row.issued_at is None or row.expires_at is None:
            return None
        try:
            value = self._cipher.decrypt(row.token_ciphertext).code
        except CardUnreadable:  # e.g. its key was rotated out: as if there were none
            logger.warning("the stored OAuth token of %s could not be decrypted; a new one will be asked for", self)
            return None
        if not value:
            return None
        return StoredToken(value, expires_at=_seconds(row.expires_at), issued_at=_seconds(row.issued_at))

    async def save(self, token: StoredToken) -> None:
        # CardCipher seals a card; the token travels as its code, the other fields empty.
        sealed = self._cipher.encrypt(GiftCard(code=token.value, pin=None, claim_url=None, expires_at=None))
        values = {
            "token_ciphertext": sealed,
            "issued_at": _datetime(token.issued_at),
            "expires_at": _datetime(token.expires_at),
        }
        async with _translated("write"):
            await self._prepare()
            await self._update(values)

    async def acquire_refresh(self, holder: str, *, now: float, until: float) -> bool:
        lapsed = _datetime(now)
        free = or_(
            tokens.c.lease_holder.is_(None),
            tokens.c.lease_holder == holder,
            tokens.c.lease_until.is_(None),
            tokens.c.lease_until <= lapsed,
        )
        async with _translated("lease"):
            await self._prepare()
            # Atomic on both databases: SQLite's write lock; PostgreSQL's row lock, then the WHERE checked again.
            return await self._update({"lease_holder": holder, "lease_until": _datetime(until)}, free)

    async def release_refresh(self, holder: str) -> None:
        async with _translated("lease"), writer(self._engine).begin() as conn:
            await conn.execute(
                update(tokens)
                .where(tokens.c.name == self._name, tokens.c.lease_holder == holder)
                .values(lease_holder=None, lease_until=None)
            )

    async def _prepare(self) -> None:
        """The ledger's tables, this one included, brought up to date once (a no-op when they are)."""
        if self._ready:
            return
        async with self._ready_lock:
            if not self._ready:
                await upgrade(self._engine)
                self._ready = True

    async def _update(self, values: dict[str, object], *conditions: ColumnElement[bool]) -> bool:
        """UPDATE this client's row where `conditions` hold: whether it changed. A missing row is created
        (empty: no token, no lease) and the UPDATE tried again, so that concurrent callers meet on one row."""
        for attempt in range(2):
            async with writer(self._engine).begin() as conn:
                changed = await conn.execute(
                    update(tokens).where(tokens.c.name == self._name, *conditions).values(values)
                )
            if changed.rowcount == 1 or attempt == 1:
                return changed.rowcount == 1
            try:
                async with writer(self._engine).begin() as conn:
                    if (await conn.execute(select(tokens.c.name).where(tokens.c.name == self._name))).first() is None:
                        await conn.execute(insert(tokens).values(name=self._name))
            except IntegrityError:
                pass  # another process created it meanwhile: as good
        return False


@asynccontextmanager
async def _translated(action: str) -> AsyncIterator[None]:
    """Database failures as ProviderUnavailable (retryable): the store's callers know provider errors only."""
    try:
        yield
    except (SQLAlchemyError, OSError) as exc:  # the engine hides statement parameters; the token is sealed
        raise ProviderUnavailable(
            f"token store: {action} failed ({type(exc).__name__})", retryable=True, maybe_committed=False
        ) from exc


def _datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _seconds(moment: datetime) -> float:
    return moment.timestamp()
