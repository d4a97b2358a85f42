"""The migrations build exactly the tables the code queries: no drift between migrations/ and the metadata.

Each component's Alembic history (the ledger's, the gateway's own) is upgraded on an empty database, then
Alembic's autogenerate compares the result with the SQLAlchemy metadata the queries use. A column added to
a Table without a migration (or a migration without the Table change) fails here, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from providers.ledger import upgrade as upgrade_ledger
from providers.ledger.tables import metadata as ledger_metadata
from providers.sql import create_engine
from resolvers import idempotency, webhooks
from resolvers.migrate import upgrade as upgrade_gateway
from tests.test_ledger import sqlite_url
from tests.test_ledger_postgres import engines  # noqa: F401  (the PostgreSQL fixture)

pytestmark = pytest.mark.anyio


def gateway_metadata() -> MetaData:
    merged = MetaData()
    for source in (idempotency.metadata, webhooks.metadata):
        for table in source.tables.values():
            table.to_metadata(merged)
    return merged


COMPONENTS: dict[str, tuple[Callable[[AsyncEngine], Awaitable[None]], Callable[[], MetaData]]] = {
    "ledger": (upgrade_ledger, lambda: ledger_metadata),
    "gateway": (upgrade_gateway, gateway_metadata),
}


async def drift(engine: AsyncEngine, metadata: MetaData) -> list[Any]:
    def compare(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection)
        # Alembic's own version tables are not drift; any other table the metadata lacks is, except the other
        # component's (both histories share one database).
        others = {name for source in (ledger_metadata, gateway_metadata()) for name in source.tables} - set(
            metadata.tables
        )
        return [
            difference
            for difference in compare_metadata(context, metadata)
            if not (
                isinstance(difference, tuple)
                and difference[0] == "remove_table"
                and (difference[1].name.endswith("alembic_version") or difference[1].name in others)
            )
        ]

    async with engine.connect() as conn:
        return await conn.run_sync(compare)


@pytest.mark.parametrize("component", sorted(COMPONENTS))
async def test_given_sqlite_when_migrated_then_the_tables_match_the_metadata(tmp_path: Path, component: str) -> None:
    upgrade, metadata = COMPONENTS[component]
    engine = create_engine(sqlite_url(tmp_path / "drift.db"), logging_name="drift")
    try:
        await upgrade(engine)
        assert await drift(engine, metadata()) == []
    finally:
        await engine.dispose()


@pytest.mark.parametrize("component", sorted(COMPONENTS))
async def test_given_postgresql_when_migrated_then_the_tables_match_the_metadata(
    engines: Callable[[], AsyncEngine],  # noqa: F811
    component: str,
) -> None:
    upgrade, metadata = COMPONENTS[component]
    engine = engines()
    await upgrade(engine)
    assert await drift(engine, metadata()) == []
