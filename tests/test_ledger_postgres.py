"""The ledger on PostgreSQL (127.0.0.1:5432, db `test`): migrations and concurrency across engines.

Skipped when no server answers there, except under .ci/run (GIFTGRAPH_TEST_REQUIRE_POSTGRES), which
expects the server CI machines run. Each test works in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from providers.base import RedemptionStatus
from providers.errors import InsufficientPoints, PointsLimitExceeded
from providers.ledger import CardCipher, PointsLedger, ReserveResult, upgrade
from providers.ledger.store import MAX_POINTS
from tests.migrations import LEDGER_HEAD
from tests.test_ledger import CARD, KEY, reserve

pytestmark = pytest.mark.anyio

PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
TABLES = {
    "ledger_accounts",
    "ledger_transactions",
    "ledger_redemptions",
    "ledger_grant_events",
    "ledger_provider_tokens",
    "ledger_alembic_version",
}
LIST_TABLES = "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"


def _reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


def require_postgres() -> None:
    """Skip without asyncpg or a server, except under .ci/run (GIFTGRAPH_TEST_REQUIRE_POSTGRES): CI has both,
    so there a missing one fails rather than skips silently."""
    required = bool(os.environ.get("GIFTGRAPH_TEST_REQUIRE_POSTGRES"))
    try:
        import asyncpg  # noqa: F401
    except ImportError:
        (pytest.fail if required else pytest.skip)("asyncpg is not installed (pip install -e '.[test]')")
    if not _reachable():
        (pytest.fail if required else pytest.skip)("no PostgreSQL answers at 127.0.0.1:5432")


@pytest.fixture
async def engines() -> AsyncIterator[Callable[[], AsyncEngine]]:
    """Makes engines (each its own pool, as separate processes have) on a fresh schema."""
    require_postgres()
    schema = f"ledger_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(PG_URL)
    made: list[AsyncEngine] = []
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))

    def make() -> AsyncEngine:
        engine = create_async_engine(
            PG_URL, hide_parameters=True, connect_args={"server_settings": {"search_path": schema}}
        )
        made.append(engine)
        return engine

    try:
        yield make
    finally:
        for engine in made:
            await engine.dispose()
        async with admin.begin() as conn:
            await conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        await admin.dispose()


async def started(engine: AsyncEngine) -> PointsLedger:
    ledger = PointsLedger(engine, CardCipher([KEY]))
    await ledger.start()
    return ledger


async def scalar(engine: AsyncEngine, sql: str) -> object:
    async with engine.connect() as conn:
        return await conn.scalar(text(sql))


async def test_given_postgres_when_upgrading_from_two_engines_twice_then_tables_exist_once(
    engines: Callable[[], AsyncEngine],
) -> None:
    one, two = engines(), engines()
    await asyncio.gather(upgrade(one), upgrade(two))
    await upgrade(one)

    async with one.connect() as conn:
        names = set((await conn.execute(text(LIST_TABLES))).scalars())
    assert names == TABLES
    assert await scalar(one, "SELECT version_num FROM ledger_alembic_version") == LEDGER_HEAD


async def test_given_postgres_and_two_engines_when_20_reserves_race_for_5_then_exactly_5_succeed(
    engines: Callable[[], AsyncEngine],
) -> None:
    one_engine = engines()
    one, two = await started(one_engine), await started(engines())
    await one.grant("alice", 500, reason="start", source="cli:test")

    results = await asyncio.gather(
        *(reserve(one if i % 2 else two, key=f"k{i}", points=100) for i in range(20)), return_exceptions=True
    )

    assert [type(r) for r in results if not isinstance(r, ReserveResult | InsufficientPoints)] == []
    assert sum(isinstance(r, ReserveResult) for r in results) == 5
    assert await scalar(one_engine, "SELECT available FROM ledger_accounts") == 0
    assert await scalar(one_engine, "SELECT min(balance_after) FROM ledger_transactions WHERE kind = 'REDEEM'") == 0
    assert await scalar(one_engine, "SELECT count(*) FROM ledger_redemptions") == 5


async def test_given_postgres_when_the_same_key_and_event_race_on_two_engines_then_each_takes_effect_once(
    engines: Callable[[], AsyncEngine],
) -> None:
    one_engine = engines()
    one, two = await started(one_engine), await started(engines())
    await one.grant("alice", 1000, reason="start", source="cli:test")

    reserves = await asyncio.gather(*(reserve(one if i % 2 else two, key="same", points=100) for i in range(10)))
    grants = await asyncio.gather(
        *(
            (one if i % 2 else two).grant("alice", 7, reason="Order #1", source="webhook:loyalty", event_id="evt_1")
            for i in range(10)
        )
    )
    [balance] = await one.balances(["alice"])

    assert len({r.redemption.id for r in reserves}) == 1 and sum(not r.replayed for r in reserves) == 1
    assert sum(g is not None for g in grants) == 1
    assert balance.available == 1000 - 100 + 7


async def test_given_postgres_when_settling_then_the_card_round_trips_and_failure_refunds_once(
    engines: Callable[[], AsyncEngine],
) -> None:
    engine = engines()
    ledger = await started(engine)
    await ledger.grant("alice", 1000, reason="start", source="cli:test")
    fulfilled, failed = await reserve(ledger, key="a"), await reserve(ledger, key="b")

    await ledger.settle(fulfilled.redemption.id, status=RedemptionStatus.FULFILLED, gift_card=CARD)
    refunds = await asyncio.gather(
        *(ledger.settle(failed.redemption.id, status=RedemptionStatus.FAILED) for _ in range(3))
    )
    [card_redemption] = await ledger.redemptions_by_id([fulfilled.redemption.id])
    page = await ledger.transactions("alice", limit=10, from_oldest=True)

    assert card_redemption is not None and card_redemption.gift_card == CARD
    assert card_redemption.face_value == Decimal("10")
    assert sum(r is not None for r in refunds) == 1
    assert [(tx.kind.value, tx.balance_after) for tx in page.items] == [
        ("REFUND", 900),
        ("REDEEM", 800),
        ("REDEEM", 900),
        ("EARN", 1000),
    ]
    ciphertext = await scalar(engine, "SELECT card_ciphertext FROM ledger_redemptions WHERE points = 100 LIMIT 1")
    assert isinstance(ciphertext, str) and "CODE-1234" not in ciphertext


async def test_given_postgres_when_a_grant_meets_a_reserve_in_flight_then_the_limit_counts_the_reserved_points(
    engines: Callable[[], AsyncEngine],
) -> None:
    one_engine, blocker = engines(), engines()
    one, two = await started(one_engine), await started(engines())
    await one.grant("alice", MAX_POINTS - 1000, reason="near the top", source="cli:test")  # starts at 0
    # Hold the reserve between its debit and its redemption row: another transaction holds the same
    # idempotency key uncommitted, so the reserve's INSERT waits, with the account row locked by its debit.
    async with blocker.connect() as held:
        transaction = await held.begin()
        await held.execute(
            text(
                "INSERT INTO ledger_redemptions (id, user_id, reward_id, face_value, currency_code, points, status,"
                " idempotency_key, request_fingerprint, order_reference, reward_snapshot, attempts, created_at,"
                " updated_at) VALUES ('rd_block', 'bob', 'r', '1', 'USD', 1, 'PENDING', 'key-held', 'fp', 'ref-block',"
                " '{}', 0, now(), now())"
            )
        )
        reserving = asyncio.create_task(reserve(one, key="key-held", points=500))
        await asyncio.sleep(0.5)  # the reserve has debited and now waits on the key
        granting = asyncio.create_task(two.grant("alice", 1001, reason="top up", source="cli:test"))
        await asyncio.sleep(0.5)  # the grant waits on the account row
        await transaction.rollback()  # the key is free: the reserve commits, then the grant goes on
        reserved = await reserving
        grant_outcome = await asyncio.gather(granting, return_exceptions=True)

    [balance] = await one.balances(["alice"])
    assert reserved.redemption.points == 500
    # MAX - 1000 held (500 of it reserved) + 1001 would pass MAX: refused, whatever the interleaving.
    assert [type(outcome) for outcome in grant_outcome] == [PointsLimitExceeded]
    assert (balance.available, balance.pending) == (MAX_POINTS - 1500, 500)
