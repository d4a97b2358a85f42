"""Brings the ledger's tables up to date: Alembic's `upgrade head`, configured in code."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from providers.sql import writer

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "ledger_alembic_version"
# Any constant shared by every process migrating this database; "ledger" in ASCII.
_PG_LOCK_ID = 0x6C6564676572


async def upgrade(engine: AsyncEngine) -> None:
    """Create or update the ledger's tables; a no-op when they are current. Safe to run from many processes."""
    # BEGIN IMMEDIATE on SQLite (an advisory lock on PostgreSQL): processes starting together migrate in turn,
    # and the later ones find the version at head.
    async with writer(engine).begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_LOCK_ID})
        await conn.run_sync(_upgrade_head)


def _upgrade_head(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
