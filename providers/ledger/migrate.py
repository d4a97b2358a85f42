"""Brings the ledger's tables up to date: Alembic's `upgrade head` of providers/ledger/migrations."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from providers import sql

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "ledger_alembic_version"
# Any constant shared by every process migrating this database; "ledger" in ASCII.
_PG_LOCK_ID = 0x6C6564676572


async def upgrade(engine: AsyncEngine) -> None:
    """Create or update the ledger's tables; a no-op when they are current. Safe to run from many processes."""
    await sql.upgrade(engine, migrations=MIGRATIONS, version_table=VERSION_TABLE, lock_id=_PG_LOCK_ID)
