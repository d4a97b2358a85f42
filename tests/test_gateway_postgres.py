"""The whole gateway on PostgreSQL (GIFTGRAPH_DATABASE_URL): a seller redemption end to end, its replay after a
restart, and the tables where they belong. Each test gets a database of its own, dropped afterwards; skipped
without a server at 127.0.0.1:5432, except under .ci/run (GIFTGRAPH_TEST_REQUIRE_POSTGRES)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from giftgraph.settings import ConfigurationError, load_settings
from tests.fake_tremendous import FakeTremendous, running_fake_tremendous
from tests.support import live_server
from tests.test_ledger import KEY
from tests.test_ledger_postgres import require_postgres
from tests.test_ledger_provider_api import AMAZON, START, balance, gateway_settings, orders_for, redeem, user

ADMIN_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


def run_sql(url: str, sql: str, **params: Any) -> list[Any]:
    """One statement on its own connection (autocommit: CREATE/DROP DATABASE need it); the rows, if any."""

    async def run() -> list[Any]:
        engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
        try:
            async with engine.connect() as conn:
                result = await conn.execute(text(sql), params)
                return [tuple(row) for row in result] if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(run())


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database's async URL."""
    require_postgres()
    name = f"giftgraph_test_{uuid.uuid4().hex[:12]}"
    run_sql(ADMIN_URL, f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    finally:
        run_sql(ADMIN_URL, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def fake() -> Iterator[FakeTremendous]:
    with running_fake_tremendous() as running:
        yield running


def test_given_postgresql_when_a_user_redeems_and_the_gateway_restarts_then_the_retry_replays_from_postgresql(
    tmp_path: Path, fake: FakeTremendous, database: str
) -> None:
    user_id = user()
    settings = gateway_settings(tmp_path, fake, database_url=database, card_encryption_keys=[KEY])

    with live_server(settings) as gateway:
        first = redeem(gateway, user_id, "pg-1")
    with live_server(settings) as restarted:  # a replica or a restart: nothing kept in memory
        again = redeem(restarted, user_id, "pg-1")
        shown = balance(restarted, user_id)

    assert first["userErrors"] == [] and first["redemption"]["status"] == "FULFILLED"
    assert again["redemption"]["id"] == first["redemption"]["id"]
    assert orders_for(fake, user_id, "pg-1") == 1
    assert shown == START - 2_500
    assert not (tmp_path / "giftgraph.db").exists()  # nothing went to the SQLite default
    redemptions = run_sql(database, "SELECT reward_id, status FROM ledger_redemptions WHERE user_id = :u", u=user_id)
    keys = run_sql(database, "SELECT state FROM idempotency_keys WHERE user_id = :u", u=user_id)
    assert redemptions == [(AMAZON, "FULFILLED")]
    assert keys == [("done",)]


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root@localhost/db",
        "sqlite:///plain-driver.db",
        "postgresql://x/y",
        "postgresql+asyncpg://postgres:p@ss:w0rd-SECRET@127.0.0.1/test",  # unescaped '@' and ':' in the password
        "postgresql+asyncpg://postgres:p@ss-SECRET@127.0.0.1/test",
    ],
)
def test_given_a_database_url_the_gateway_cannot_use_then_a_settings_error_naming_it_never_its_password(
    url: str,
) -> None:
    with pytest.raises(ConfigurationError, match="database_url") as raised:
        load_settings(database_url=url)
    assert "SECRET" not in str(raised.value)


def test_given_a_shared_database_and_a_seller_then_the_card_keys_must_be_set() -> None:
    url = "postgresql+asyncpg://postgres@127.0.0.1:5432/anything"
    with pytest.raises(ConfigurationError, match="GIFTGRAPH_CARD_ENCRYPTION_KEYS"):
        load_settings(database_url=url, provider="tremendous", tremendous_api_key="k")
    assert load_settings(database_url=url, provider="tremendous", tremendous_api_key="k", card_encryption_keys=[KEY])
