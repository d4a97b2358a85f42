"""The gateway's own tables come from an Alembic history, also over a database an earlier build made."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from providers.sql import create_engine
from resolvers.idempotency import ClaimState, IdempotencyStore
from resolvers.migrate import upgrade
from tests.migrations import GATEWAY_HEAD
from tests.test_ledger_postgres import engines  # noqa: F401  (the PostgreSQL fixture, skipped without a server)

pytestmark = pytest.mark.anyio

TABLES = {"idempotency_keys", "webhook_events", "redemption_states", "gateway_alembic_version"}
# idempotency_keys as the build before migrations created it: no `request`, no `attempts`.
EARLIER_BUILD = """
CREATE TABLE idempotency_keys (
    user_id VARCHAR(255) NOT NULL, key VARCHAR(255) NOT NULL, fingerprint VARCHAR(64) NOT NULL,
    state VARCHAR(16) NOT NULL, claim_token VARCHAR(32) NOT NULL, payload TEXT, lease_until FLOAT NOT NULL,
    expires_at FLOAT NOT NULL, created_at FLOAT NOT NULL, PRIMARY KEY (user_id, key)
);
INSERT INTO idempotency_keys VALUES ('alice', 'k1', 'f1', 'done', 't', '{"redemption_id": "rd_1"}', 0, 1e12, 0);
"""


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    made = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'giftgraph.db'}", logging_name="test")
    try:
        yield made
    finally:
        await made.dispose()


def sqlite_tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def test_given_a_new_database_when_upgraded_twice_then_the_tables_exist_once(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    await upgrade(engine)
    await upgrade(engine)

    assert TABLES <= sqlite_tables(tmp_path / "giftgraph.db")
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT version_num FROM gateway_alembic_version"))).scalar_one() == GATEWAY_HEAD


async def test_given_a_database_an_earlier_build_made_when_the_store_starts_then_columns_are_added_and_rows_kept(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    with sqlite3.connect(tmp_path / "giftgraph.db") as conn:
        conn.executescript(EARLIER_BUILD)
    store = IdempotencyStore(engine, ttl_seconds=86_400, lease_seconds=60)

    await store.start()

    replay = await store.claim("alice", "k1", "f1")
    assert (replay.state, replay.payload) == (ClaimState.DONE, {"redemption_id": "rd_1"})
    fresh = await store.claim("bob", "k2", "f2")
    assert fresh.state is ClaimState.ACQUIRED
    assert await store.record_request(fresh, {"reward_id": "rw_1", "points": 10})
    assert TABLES <= sqlite_tables(tmp_path / "giftgraph.db")


async def test_given_postgresql_when_upgraded_from_two_engines_then_the_tables_exist_once(
    engines: Callable[[], AsyncEngine],  # noqa: F811
) -> None:
    first, second = engines(), engines()

    await upgrade(first)
    await upgrade(second)

    async with second.connect() as conn:
        names = {
            row[0]
            for row in await conn.execute(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
            )
        }
    assert TABLES <= names
    store = IdempotencyStore(first, ttl_seconds=86_400, lease_seconds=60)
    await store.start()
    assert (await store.claim("carol", "k", "f")).state is ClaimState.ACQUIRED
