"""The ledger's Alembic migrations, run in code: tables created once, a second upgrade changes nothing."""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from providers.ledger import upgrade
from providers.sql import create_engine
from tests.migrations import LEDGER_HEAD
from tests.test_ledger import open_ledger, rows, sqlite_url

pytestmark = pytest.mark.anyio

TABLES = {"ledger_accounts", "ledger_transactions", "ledger_redemptions", "ledger_grant_events"}


def schema(path: Path) -> list[tuple[str, str]]:
    return rows(path, "SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")


async def test_given_an_empty_database_when_upgrading_twice_then_tables_exist_and_the_second_is_a_no_op(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    engine = create_engine(sqlite_url(path), logging_name="ledger")
    try:
        await upgrade(engine)
        first = schema(path)
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("INSERT INTO ledger_accounts VALUES ('alice', 5, '2026-01-01', '2026-01-01')")
        await upgrade(engine)
    finally:
        await engine.dispose()

    assert TABLES <= {name for name, _ in first}
    assert schema(path) == first
    assert rows(path, "SELECT version_num FROM ledger_alembic_version") == [(LEDGER_HEAD,)]
    assert rows(path, "SELECT user_id, available FROM ledger_accounts") == [("alice", 5)]
    assert not (Path.cwd() / "alembic.ini").exists()  # configured in code, nothing read from disk


async def test_given_two_ledgers_starting_together_then_the_tables_are_created_once(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with open_ledger(path) as one, open_ledger(path) as two:
        await asyncio.gather(one.start(), two.start(), one.start())
        await one.grant("alice", 1, reason="works", source="cli:test")

    assert rows(path, "SELECT count(*) FROM ledger_alembic_version") == [(1,)]


async def test_given_the_last_transaction_deleted_then_its_position_is_never_reused(tmp_path: Path) -> None:
    # Keyset pagination relies on positions only growing: a reused one would slip into a client's seen window.
    path = tmp_path / "ledger.db"
    async with open_ledger(path) as ledger:
        first = await ledger.grant("alice", 1, reason="a", source="cli:test")
        assert first is not None
        with closing(sqlite3.connect(path)) as conn, conn:
            conn.execute("DELETE FROM ledger_transactions")
        second = await ledger.grant("alice", 1, reason="b", source="cli:test")

    assert second is not None and second.transaction.position > first.transaction.position


async def test_given_the_balance_check_constraint_then_the_database_refuses_a_negative_balance(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    async with open_ledger(path) as ledger:
        await ledger.balances(["alice"])

    with closing(sqlite3.connect(path)) as conn, pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("UPDATE ledger_accounts SET available = -1")
