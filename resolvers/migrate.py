"""Brings the gateway's own tables (idempotency keys, webhook events, redemption states) up to date."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from providers import sql

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "gateway_alembic_version"
_PG_LOCK_ID = 0x67617465776179  # "gateway" in ASCII


async def upgrade(engine: AsyncEngine) -> None:
    """Create or update the tables; a no-op when they are current. Safe to run from many processes."""
    await sql.upgrade(engine, migrations=MIGRATIONS, version_table=VERSION_TABLE, lock_id=_PG_LOCK_ID)
