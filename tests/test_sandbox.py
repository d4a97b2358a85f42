"""The embedded sandbox provider against real SQLite files and a real EventHub."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from providers.base import (
    DenominationKind,
    RedeemRequest,
    Redemption,
    RedemptionStatus,
    Reward,
    RewardAvailability,
    TransactionKind,
)
from providers.errors import (
    IdempotencyConflict,
    InsufficientPoints,
    InvalidFaceValue,
    ProviderError,
    ProviderUnavailable,
    RewardNotFound,
    RewardUnavailable,
)
from providers.events import BalanceChanged, EventHub, ProviderEvent, RedemptionUpdated
from providers.sandbox import (
    SandboxConfig,
    SandboxFaults,
    SandboxProvider,
    build_catalog,
    failing_reward_ids,
    is_failing,
)
from providers.sandbox.store import SandboxStore

pytestmark = pytest.mark.anyio

START = 10_000
FAST = 0.05  # seconds: fulfilment delay for tests that wait for it
NEVER = 3600.0  # seconds: fulfilment delay for tests that must see PENDING
EXPECTED_COUNTRIES = {"US", "CA", "GB", "IE", "DE", "FR", "ES", "IT", "NL", "AU"}
CURRENCY_COUNTRIES = {"USD": {"US"}, "CAD": {"CA"}, "GBP": {"GB"}, "AUD": {"AU"}}
EURO_COUNTRIES = {"IE", "DE", "FR", "ES", "IT", "NL"}
CATALOG = build_catalog(7, 520)
FAILING = failing_reward_ids(CATALOG)


# Helpers


def db_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@asynccontextmanager
async def running_sandbox(
    path: Path,
    *,
    events: EventHub | None = None,
    faults: SandboxFaults | None = None,
    starting_balance: int = START,
    fulfilment_delay: float = NEVER,
) -> AsyncIterator[SandboxProvider]:
    provider = SandboxProvider(
        database_url=db_url(path),
        events=events or EventHub(),
        config=SandboxConfig(starting_balance=starting_balance, fulfilment_delay=fulfilment_delay),
        faults=faults,
    )
    await provider.start()
    try:
        yield provider
    finally:
        await provider.aclose()


def pick(
    *,
    kind: DenominationKind | None = None,
    availability: RewardAvailability = RewardAvailability.AVAILABLE,
    failing: bool = False,
) -> Reward:
    return next(
        reward
        for reward in CATALOG
        if reward.availability is availability
        and (kind is None or reward.denomination.kind is kind)
        and (reward.id in FAILING) is failing
    )


def request_for(
    reward: Reward,
    *,
    user: str = "alice",
    key: str = "key-1",
    face_value: Decimal | None = None,
    points: int | None = None,
) -> RedeemRequest:
    value = face_value if face_value is not None else reward.denomination.min_value
    return RedeemRequest(
        user_id=user,
        reward_id=reward.id,
        face_value=value,
        points=points if points is not None else int(value * 10),
        idempotency_key=key,
    )


def row_count(path: Path, table: str) -> int:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608 - test-owned names


async def wait_for_status(provider: SandboxProvider, redemption_id: str, status: RedemptionStatus) -> Redemption:
    deadline = time.monotonic() + 5
    while True:
        [redemption] = await provider.get_redemptions([redemption_id])
        assert redemption is not None
        if redemption.status is status:
            return redemption
        assert time.monotonic() < deadline, f"still {redemption.status}"
        await asyncio.sleep(0.02)


async def next_event(queue: asyncio.Queue[ProviderEvent]) -> ProviderEvent:
    return await asyncio.wait_for(queue.get(), timeout=5)


# Catalog


def test_given_default_settings_when_building_catalog_then_counts_and_shares_hold() -> None:
    catalog = CATALOG

    assert len(catalog) == 520
    assert len({reward.brand for reward in catalog}) >= 50
    assert len({reward.category for reward in catalog}) == 8
    assert {country for reward in catalog for country in reward.countries} == EXPECTED_COUNTRIES
    assert {reward.currency_code for reward in catalog} == {"USD", "CAD", "GBP", "EUR", "AUD"}
    availability = Counter(reward.availability for reward in catalog)
    assert 0.06 <= availability[RewardAvailability.OUT_OF_STOCK] / len(catalog) <= 0.10
    assert 0.02 <= availability[RewardAvailability.DISCONTINUED] / len(catalog) <= 0.06
    assert availability[RewardAvailability.AVAILABLE] == len(catalog) - sum(
        availability[state] for state in (RewardAvailability.OUT_OF_STOCK, RewardAvailability.DISCONTINUED)
    )


def test_given_catalog_then_every_reward_is_well_formed() -> None:
    ids = [reward.id for reward in CATALOG]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    for reward in CATALOG:
        assert reward.id.startswith("rw_") and reward.id[3:].isdigit()
        assert reward.image_url == f"https://sandbox.giftgraph.invalid/images/{reward.id}.png"
        assert reward.brand in reward.description and reward.category in reward.description
        assert reward.name.startswith(reward.brand)
        if reward.currency_code == "EUR":
            assert reward.countries and set(reward.countries) <= EURO_COUNTRIES
        else:
            assert set(reward.countries) == CURRENCY_COUNTRIES[reward.currency_code]
        denomination = reward.denomination
        values = (*denomination.face_values, denomination.min_value, denomination.max_value)
        assert all(value.as_tuple().exponent == -2 for value in values)
        if denomination.kind is DenominationKind.FIXED:
            assert list(denomination.face_values) == sorted(set(denomination.face_values))
            assert denomination.min_value == denomination.face_values[0]
            assert denomination.max_value == denomination.face_values[-1]
        else:
            assert denomination.face_values == ()
            assert Decimal(0) < denomination.min_value < denomination.max_value
    kinds = {reward.denomination.kind for reward in CATALOG}
    assert kinds == {DenominationKind.FIXED, DenominationKind.VARIABLE}
    assert any(reward.terms is None for reward in CATALOG) and any(reward.terms for reward in CATALOG)


def test_given_catalog_then_a_few_available_rewards_always_fail_fulfilment() -> None:
    assert 0 < len(FAILING) <= 0.03 * len(CATALOG)
    failing = [reward for reward in CATALOG if reward.id in FAILING]
    assert all(reward.availability is RewardAvailability.AVAILABLE for reward in failing)
    assert all(reward.description.endswith("(sandbox: fulfilment always fails)") for reward in failing)
    assert {reward.id for reward in CATALOG if is_failing(reward)} == FAILING


def test_given_same_seed_when_building_twice_then_catalogs_are_identical() -> None:
    assert build_catalog(7, 520) == CATALOG
    assert build_catalog(8, 520) != CATALOG


# Catalog reads


async def test_given_pages_of_37_when_walking_list_rewards_then_whole_catalog_is_seen_once_in_order(
    tmp_path: Path,
) -> None:
    async with running_sandbox(tmp_path / "sandbox.db") as provider:
        seen: list[Reward] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await provider.list_rewards(cursor=cursor, limit=37)
            pages += 1
            seen.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor

    assert tuple(seen) == provider.catalog == CATALOG
    assert pages == -(-len(CATALOG) // 37)


async def test_given_out_of_range_limits_when_listing_rewards_then_limit_is_clamped(tmp_path: Path) -> None:
    async with running_sandbox(tmp_path / "sandbox.db") as provider:
        assert len((await provider.list_rewards(cursor=None, limit=1000)).items) == 100
        assert len((await provider.list_rewards(cursor=None, limit=0)).items) == 1
        last = await provider.list_rewards(cursor=CATALOG[-2].id, limit=5)
        assert last.items == (CATALOG[-1],) and last.next_cursor is None


async def test_given_unknown_cursor_when_listing_rewards_then_provider_error(tmp_path: Path) -> None:
    async with running_sandbox(tmp_path / "sandbox.db") as provider:
        with pytest.raises(ProviderError, match="invalid cursor"):
            await provider.list_rewards(cursor="not-a-cursor", limit=10)


async def test_given_ids_when_getting_rewards_then_order_is_kept_and_unknown_is_none(tmp_path: Path) -> None:
    async with running_sandbox(tmp_path / "sandbox.db") as provider:
        rewards = await provider.get_rewards([CATALOG[5].id, "rw_nope", CATALOG[0].id, CATALOG[5].id])

    assert rewards == [CATALOG[5], None, CATALOG[0], CATALOG[5]]


# Balances and enrolment


async def test_given_new_users_when_getting_balances_then_order_is_kept_and_each_gets_starting_balance(
    tmp_path: Path,
) -> None:
    async with running_sandbox(tmp_path / "sandbox.db") as provider:
        balances = await provider.get_balances(["bob", "alice", "bob"])

    assert [balance.user_id for balance in balances] == ["bob", "alice", "bob"]
    assert all(balance.available == START and balance.pending == 0 for balance in balances)
    assert all(balance.updated_at.tzinfo is not None for balance in balances)
    assert balances[0].updated_at.utcoffset() == timedelta(0)


async def test_given_20_concurrent_first_calls_when_enrolling_then_exactly_one_welcome_earn(tmp_path: Path) -> None:
    async with running_sandbox(tmp_path / "sandbox.db") as provider:
        results = await asyncio.gather(*(provider.get_balances(["carol"]) for _ in range(20)))
        history = await provider.list_transactions(
            "carol", kinds=None, older_than=None, newer_than=None, limit=50
        )

    assert {result[0].available for result in results} == {START}
    assert history.total_count == 1
    [earn] = history.items
    assert (earn.kind, earn.points, earn.balance_after, earn.description) == (
        TransactionKind.EARN,
        START,
        START,
        "Welcome bonus",
    )


async def test_given_unknown_user_when_listing_transactions_then_user_is_enrolled(tmp_path: Path) -> None:
    async with running_sandbox(tmp_path / "sandbox.db") as provider:
        page = await provider.list_transactions("dave", kinds=None, older_than=None, newer_than=None, limit=10)
        [balance] = await provider.get_balances(["dave"])

    assert [tx.kind for tx in page.items] == [TransactionKind.EARN]
    assert balance.available == START


# Redeem


async def test_given_enough_points_when_redeeming_then_balance_is_debited_and_redeem_is_recorded(
    tmp_path: Path,
) -> None:
    reward = pick(kind=DenominationKind.FIXED)
    value = reward.denomination.face_values[1]
    async with running_sandbox(tmp_path / "sandbox.db") as provider:
        result = await provider.redeem(request_for(reward, face_value=value, points=2500))
        history = await provider.list_transactions(
            "alice", kinds=None, older_than=None, newer_than=None, limit=10
        )
        [balance] = await provider.get_balances(["alice"])

    redemption = result.redemption
    assert not result.replayed
    assert redemption.status is RedemptionStatus.PENDING and redemption.gift_card is None
    assert (redemption.reward_id, redemption.face_value, redemption.points) == (reward.id, value, 2500)
    assert redemption.currency_code == reward.currency_code
    assert str(redemption.face_value) == str(value)  # two places, as in the catalog
    assert redemption.id.startswith("rd_")
    assert (result.balance.available, result.balance.pending) == (START - 2500, 2500)
    assert (balance.available, balance.pending) == (START - 2500, 2500)
    redeem, earn = history.items
    assert earn.kind is TransactionKind.EARN
    assert (redeem.kind, redeem.points, redeem.balance_after) == (TransactionKind.REDEEM, -2500, START - 2500)
    assert redeem.redemption_id == redemption.id
    assert redeem.position > earn.position
    assert reward.name in redeem.description and reward.currency_code in redeem.description


async def test_given_variable_reward_when_redeeming_a_value_in_range_then_it_is_accepted(tmp_path: Path) -> None:
    reward = pick(kind=DenominationKind.VARIABLE)
    value = reward.denomination.min_value + Decimal("1.25")
    async with running_sandbox(tmp_path / "sandbox.db") as provider:
        result = await provider.redeem(request_for(reward, face_value=value, points=130))

    assert result.redemption.face_value == value


async def test_given_too_few_points_when_redeeming_then_insufficient_points_and_nothing_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sandbox.db"
    reward = pick(kind=DenominationKind.FIXED)
    async with running_sandbox(path, starting_balance=100) as provider:
        await provider.get_balances(["alice"])
        with pytest.raises(InsufficientPoints):
            await provider.redeem(request_for(reward, points=101))
        [balance] = await provider.get_balances(["alice"])

    assert (balance.available, balance.pending) == (100, 0)
    assert row_count(path, "redemptions") == 0
    assert row_count(path, "transactions") == 1  # the welcome EARN only


async def test_given_new_user_with_too_few_points_when_redeeming_then_not_even_the_enrolment_is_kept(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sandbox.db"
    async with running_sandbox(path, starting_balance=10) as provider:
        with pytest.raises(InsufficientPoints):
            await provider.redeem(request_for(pick(kind=DenominationKind.FIXED), points=11))

    assert (row_count(path, "users"), row_count(path, "transactions"), row_count(path, "redemptions")) == (0, 0, 0)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("unknown reward", RewardNotFound),
        ("out of stock", RewardUnavailable),
        ("discontinued", RewardUnavailable),
        ("fixed value not listed", InvalidFaceValue),
        ("variable below minimum", InvalidFaceValue),
        ("variable above maximum", InvalidFaceValue),
        ("fraction of a cent", InvalidFaceValue),
        ("not a number", InvalidFaceValue),
        ("no points", InvalidFaceValue),
    ],
)
async def test_given_invalid_request_when_redeeming_then_right_error_and_nothing_written(
    tmp_path: Path, case: str, error: type[ProviderError]
) -> None:
    fixed = pick(kind=DenominationKind.FIXED)
    variable = pick(kind=DenominationKind.VARIABLE)
    requests = {
        "unknown reward": RedeemRequest("alice", "rw_9999", Decimal("10"), 1000, "k"),
        "out of stock": request_for(pick(availability=RewardAvailability.OUT_OF_STOCK)),
        "discontinued": request_for(pick(availability=RewardAvailability.DISCONTINUED)),
        "fixed value not listed": request_for(fixed, face_value=fixed.denomination.face_values[0] + 1),
        "variable below minimum": request_for(variable, face_value=variable.denomination.min_value - Decimal("0.01")),
        "variable above maximum": request_for(variable, face_value=variable.denomination.max_value + Decimal("0.01")),
        "fraction of a cent": request_for(variable, face_value=variable.denomination.min_value + Decimal("0.001")),
        "not a number": request_for(variable, face_value=Decimal("NaN"), points=100),
        "no points": request_for(fixed, points=0),
    }
    path = tmp_path / "sandbox.db"
    async with running_sandbox(path) as provider:
        await provider.get_balances(["alice"])
        with pytest.raises(error):
            await provider.redeem(requests[case])
        [balance] = await provider.get_balances(["alice"])

    assert (balance.available, balance.pending) == (START, 0)
    assert row_count(path, "redemptions") == 0
    assert row_count(path, "transactions") == 1


async def test_given_same_key_and_request_when_redeeming_again_then_first_result_is_replayed(tmp_path: Path) -> None:
    reward = pick(kind=DenominationKind.FIXED)
    value = reward.denomination.face_values[0]
    path = tmp_path / "sandbox.db"
    async with running_sandbox(path) as provider:
        first = await provider.redeem(request_for(reward, face_value=value, points=500))
        # The same amount written differently is the same request.
        again = await provider.redeem(request_for(reward, face_value=value.normalize(), points=500))

    assert again.replayed and not first.replayed
    assert again.redemption == first.redemption
    assert again.balance.available == START - 500
    assert row_count(path, "redemptions") == 1
    assert row_count(path, "transactions") == 2


@pytest.mark.parametrize("change", ["points", "face value", "reward", "user"])
async def test_given_key_reused_for_another_request_when_redeeming_then_idempotency_conflict(
    tmp_path: Path, change: str
) -> None:
    reward = pick(kind=DenominationKind.FIXED)
    other = next(r for r in CATALOG if r.id != reward.id and r.availability is RewardAvailability.AVAILABLE)
    original = request_for(reward, points=500)
    reused = {
        "points": request_for(reward, points=501),
        "face value": request_for(reward, face_value=reward.denomination.face_values[1], points=500),
        "reward": request_for(other, points=500),
        "user": request_for(reward, user="mallory", points=500),
    }[change]
    path = tmp_path / "sandbox.db"
    async with running_sandbox(path) as provider:
        await provider.redeem(original)
        with pytest.raises(IdempotencyConflict):
            await provider.redeem(reused)
        [balance] = await provider.get_balances(["alice"])

    assert balance.available == START - 500
    assert row_count(path, "redemptions") == 1


async def test_given_50_concurrent_redemptions_when_points_run_out_then_balance_never_goes_negative(
    tmp_path: Path,
) -> None:
    reward = pick(kind=DenominationKind.FIXED)
    async with running_sandbox(tmp_path / "sandbox.db", starting_balance=1000) as provider:
        results = await asyncio.gather(
            *(provider.redeem(request_for(reward, key=f"k{i}", points=70)) for i in range(50)),
            return_exceptions=True,
        )
        [balance] = await provider.get_balances(["alice"])
        history = await provider.list_transactions(
            "alice", kinds=frozenset({TransactionKind.REDEEM}), older_than=None, newer_than=None, limit=100
        )

    succeeded = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    assert all(isinstance(error, InsufficientPoints) for error in failed)
    assert len(succeeded) == 1000 // 70
    assert balance.available == 1000 - 70 * len(succeeded) >= 0
    assert -sum(tx.points for tx in history.items) == 1000 - balance.available
    assert history.total_count == len(succeeded)
    assert sorted(tx.balance_after for tx in history.items) == [1000 - 70 * n for n in range(len(succeeded), 0, -1)]


async def test_given_two_providers_sharing_a_file_when_both_redeem_then_debits_stay_consistent(
    tmp_path: Path,
) -> None:
    # Two engines on one file stand in for two processes: only SQLite's lock separates them.
    path = tmp_path / "sandbox.db"
    reward = pick(kind=DenominationKind.FIXED)
    async with running_sandbox(path, starting_balance=1000) as one, running_sandbox(path, starting_balance=1000) as two:
        results = await asyncio.gather(
            *(
                (one if i % 2 else two).redeem(request_for(reward, key=f"k{i}", points=90))
                for i in range(30)
            ),
            one.get_balances(["alice"]),
            two.get_balances(["alice"]),
            return_exceptions=True,
        )
        [balance] = await one.get_balances(["alice"])

    redemptions = results[:30]
    assert all(isinstance(r, InsufficientPoints) for r in redemptions if isinstance(r, BaseException))
    succeeded = [r for r in redemptions if not isinstance(r, BaseException)]
    assert len(succeeded) == 1000 // 90
    assert balance.available == 1000 - 90 * len(succeeded)
    with closing(sqlite3.connect(path)) as conn:
        earns = conn.execute("SELECT count(*) FROM transactions WHERE kind = 'EARN'").fetchone()[0]
    assert earns == 1


# Transactions: write lock


async def test_given_write_transaction_then_sqlite_write_lock_is_held_from_begin(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.db"
    store = SandboxStore(db_url(path))
    await store.open()
    try:
        async with store.write():
            with closing(sqlite3.connect(path, timeout=0)) as other:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
        async with store.read():
            with closing(sqlite3.connect(path, timeout=0, isolation_level=None)) as other:
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
        with closing(sqlite3.connect(path)) as other:
            assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await store.close()


# Fulfilment


async def test_given_short_delay_when_redeeming_then_fulfilled_with_a_card_and_events_published(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")  # SQLAlchemy defaults itself to WARNING
    hub = EventHub()
    reward = pick(kind=DenominationKind.FIXED)
    async with running_sandbox(tmp_path / "sandbox.db", events=hub, fulfilment_delay=FAST) as provider:
        async with hub.subscribe("alice") as queue:
            result = await provider.redeem(request_for(reward, points=400))
            events = [await next_event(queue) for _ in range(4)]
        fulfilled = await wait_for_status(provider, result.redemption.id, RedemptionStatus.FULFILLED)
        [balance] = await provider.get_balances(["alice"])

    debited, pending, settled, after = events
    assert isinstance(debited, BalanceChanged) and debited.balance.available == START - 400
    assert isinstance(pending, RedemptionUpdated) and pending.redemption.status is RedemptionStatus.PENDING
    assert isinstance(settled, RedemptionUpdated) and settled.redemption == fulfilled
    assert isinstance(after, BalanceChanged) and (after.balance.available, after.balance.pending) == (START - 400, 0)
    card = fulfilled.gift_card
    assert card is not None and card.code and card.pin
    assert card.claim_url is not None and card.claim_url.startswith("https://sandbox.giftgraph.invalid/claim/")
    assert card.expires_at is not None and card.expires_at.tzinfo is not None
    assert abs(card.expires_at - (fulfilled.updated_at + timedelta(days=365))) < timedelta(seconds=1)
    assert fulfilled.updated_at >= fulfilled.created_at
    assert abs(fulfilled.created_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert (balance.available, balance.pending) == (START - 400, 0)
    for secret in (card.code, card.pin, card.claim_url):
        assert secret not in caplog.text
    assert "GiftCard(<redacted>)" in repr(fulfilled)


async def test_given_reward_that_always_fails_when_fulfilled_then_failed_and_points_refunded(tmp_path: Path) -> None:
    hub = EventHub()
    reward = pick(failing=True)
    async with running_sandbox(tmp_path / "sandbox.db", events=hub, fulfilment_delay=FAST) as provider:
        async with hub.subscribe("alice") as queue:
            result = await provider.redeem(request_for(reward, points=700))
            events = [await next_event(queue) for _ in range(4)]
        failed = await wait_for_status(provider, result.redemption.id, RedemptionStatus.FAILED)
        [balance] = await provider.get_balances(["alice"])
        history = await provider.list_transactions(
            "alice", kinds=None, older_than=None, newer_than=None, limit=10
        )

    assert failed.failure_reason == "The provider could not fulfil this reward"
    assert failed.gift_card is None
    assert (balance.available, balance.pending) == (START, 0)
    refund, redeem, _earn = history.items
    assert (refund.kind, refund.points, refund.balance_after) == (TransactionKind.REFUND, 700, START)
    assert refund.redemption_id == redeem.redemption_id == failed.id
    assert isinstance(events[2], RedemptionUpdated) and events[2].redemption.status is RedemptionStatus.FAILED
    assert isinstance(events[3], BalanceChanged) and events[3].balance.available == START


async def test_given_pending_redemption_when_restarted_with_short_delay_then_it_is_fulfilled(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.db"
    reward = pick(kind=DenominationKind.FIXED)
    async with running_sandbox(path, fulfilment_delay=NEVER) as first:
        result = await first.redeem(request_for(reward, points=300))
        assert first.fulfilments_in_flight == 1
    assert first.fulfilments_in_flight == 0

    async with running_sandbox(path, fulfilment_delay=FAST) as second:
        [still_pending] = await second.get_redemptions([result.redemption.id])
        fulfilled = await wait_for_status(second, result.redemption.id, RedemptionStatus.FULFILLED)
        [balance] = await second.get_balances(["alice"])

    assert still_pending is not None
    assert fulfilled.gift_card is not None and fulfilled.gift_card.code
    assert (balance.available, balance.pending) == (START - 300, 0)


async def test_given_two_providers_resuming_the_same_failed_redemption_then_it_is_refunded_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sandbox.db"
    async with running_sandbox(path, fulfilment_delay=NEVER) as first:
        result = await first.redeem(request_for(pick(failing=True), points=250))

    async with running_sandbox(path, fulfilment_delay=0) as one, running_sandbox(path, fulfilment_delay=0) as two:
        await wait_for_status(one, result.redemption.id, RedemptionStatus.FAILED)
        for _ in range(250):  # the other provider's attempt finds nothing left to do
            if not (one.fulfilments_in_flight or two.fulfilments_in_flight):
                break
            await asyncio.sleep(0.02)
        [balance] = await two.get_balances(["alice"])

    assert (balance.available, balance.pending) == (START, 0)
    with closing(sqlite3.connect(path)) as conn:
        refunds = conn.execute("SELECT count(*) FROM transactions WHERE kind = 'REFUND'").fetchone()[0]
    assert refunds == 1


async def test_given_provider_when_started_and_closed_twice_then_both_are_idempotent(tmp_path: Path) -> None:
    provider = SandboxProvider(database_url=db_url(tmp_path / "sandbox.db"), events=EventHub())
    await provider.start()
    await provider.start()
    await provider.check()
    await provider.aclose()
    await provider.aclose()
    with pytest.raises(ProviderUnavailable):
        await provider.check()


# Transaction history windows


async def test_given_history_when_paging_forward_and_backward_then_windows_and_flags_are_right(
    tmp_path: Path,
) -> None:
    reward = pick(kind=DenominationKind.FIXED)
    async with running_sandbox(tmp_path / "sandbox.db") as provider:
        for i in range(6):
            await provider.redeem(request_for(reward, key=f"k{i}", points=10 + i))
        everything = await provider.list_transactions(
            "alice", kinds=None, older_than=None, newer_than=None, limit=100
        )
        positions = [tx.position for tx in everything.items]  # newest first

        async def window(**kwargs: object) -> tuple[list[int], int, bool]:
            params: dict[str, object] = {"kinds": None, "older_than": None, "newer_than": None, **kwargs}
            page = await provider.list_transactions("alice", **params)  # type: ignore[arg-type]
            return [tx.position for tx in page.items], page.total_count, page.has_more

        newest = await window(limit=3)
        older = await window(limit=3, older_than=newest[0][-1])
        oldest = await window(limit=3, older_than=older[0][-1])
        backward = await window(limit=3, from_oldest=True)
        backward_next = await window(limit=3, from_oldest=True, newer_than=backward[0][0])
        between = await window(limit=10, older_than=positions[0], newer_than=positions[-1])
        redeems = await window(limit=4, kinds=frozenset({TransactionKind.REDEEM}))
        earns = await window(limit=4, kinds=frozenset({TransactionKind.EARN}))
        nothing = await window(limit=0)

    assert len(positions) == 7 and positions == sorted(positions, reverse=True)
    assert everything.total_count == 7 and not everything.has_more
    assert newest == (positions[0:3], 7, True)
    assert older == (positions[3:6], 7, True)
    assert oldest == (positions[6:7], 7, False)
    assert backward == (positions[4:7], 7, True)
    assert backward_next == (positions[1:4], 7, True)
    assert between == (positions[1:6], 7, False)
    assert redeems == (positions[0:4], 6, True)
    assert earns == (positions[6:7], 1, False)
    assert nothing == ([], 7, True)


# Call counts and faults


async def test_given_calls_when_counting_then_each_port_call_counts_once(tmp_path: Path) -> None:
    reward = pick(kind=DenominationKind.FIXED)
    async with running_sandbox(tmp_path / "sandbox.db") as provider:
        await provider.get_balances(["a", "b", "c"])
        await provider.get_balances(["a"])
        await provider.get_rewards([r.id for r in CATALOG[:10]])
        await provider.list_rewards(cursor=None, limit=10)
        await provider.list_transactions("a", kinds=None, older_than=None, newer_than=None, limit=5)
        await provider.redeem(request_for(reward, user="a"))
        await provider.get_redemptions(["rd_x", "rd_y"])
        await provider.check()

    assert provider.calls.counts == {
        "get_balances": 2,
        "get_rewards": 1,
        "list_rewards": 1,
        "list_transactions": 1,
        "redeem": 1,
        "get_redemptions": 1,
        "check": 1,
    }


async def test_given_fail_next_when_calling_then_that_many_calls_fail_and_are_still_counted(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.db"
    reward = pick(kind=DenominationKind.FIXED)
    faults = SandboxFaults()
    async with running_sandbox(path, faults=faults) as provider:
        faults.fail_next("redeem", times=2)
        for _ in range(2):
            with pytest.raises(ProviderUnavailable) as raised:
                await provider.redeem(request_for(reward))
            assert raised.value.retryable
        assert row_count(path, "redemptions") == 0
        result = await provider.redeem(request_for(reward))
        await provider.get_balances(["alice"])  # other operations were never affected

    assert not result.replayed
    assert provider.calls.get("redeem") == 3


async def test_given_failure_rate_one_when_calling_anything_then_provider_unavailable(tmp_path: Path) -> None:
    faults = SandboxFaults(failure_rate=1.0, seed=1)
    async with running_sandbox(tmp_path / "sandbox.db", faults=faults) as provider:
        calls = [
            provider.check(),
            provider.list_rewards(cursor=None, limit=5),
            provider.get_rewards(["rw_0001"]),
            provider.get_balances(["alice"]),
            provider.list_transactions("alice", kinds=None, older_than=None, newer_than=None, limit=5),
            provider.get_redemptions(["rd_x"]),
            provider.redeem(request_for(pick(kind=DenominationKind.FIXED))),
        ]
        for call in calls:
            with pytest.raises(ProviderUnavailable):
                await call
        faults.failure_rate = 0.0
        await provider.check()


async def test_given_seeded_partial_failure_rate_then_failures_are_reproducible(tmp_path: Path) -> None:
    async def outcomes() -> list[bool]:
        faults = SandboxFaults(failure_rate=0.5, seed=42)
        async with running_sandbox(tmp_path / "sandbox.db", faults=faults) as provider:
            results = []
            for _ in range(20):
                try:
                    await provider.get_rewards(["rw_0001"])
                    results.append(True)
                except ProviderUnavailable:
                    results.append(False)
            return results

    first = await outcomes()
    assert first == await outcomes()
    assert True in first and False in first


async def test_given_latency_when_calling_then_call_takes_at_least_that_long(tmp_path: Path) -> None:
    async with running_sandbox(tmp_path / "sandbox.db", faults=SandboxFaults(latency=0.05)) as provider:
        started = time.monotonic()
        await provider.get_rewards(["rw_0001"])
        assert time.monotonic() - started >= 0.05


def test_given_unknown_operation_when_scheduling_failure_then_value_error() -> None:
    with pytest.raises(ValueError, match="unknown operation"):
        SandboxFaults().fail_next("redeem_all")


# Storage failures


async def test_given_missing_directory_when_starting_then_it_is_created(tmp_path: Path) -> None:
    async with running_sandbox(tmp_path / "data" / "sandbox.db") as provider:
        await provider.check()

    assert (tmp_path / "data" / "sandbox.db").is_file()


async def test_given_directory_path_blocked_by_a_file_when_starting_then_provider_unavailable(
    tmp_path: Path,
) -> None:
    (tmp_path / "data").write_text("not a directory")
    provider = SandboxProvider(database_url=db_url(tmp_path / "data" / "sandbox.db"), events=EventHub())
    with pytest.raises(ProviderUnavailable):
        await provider.start()
    await provider.aclose()


async def test_given_file_that_is_not_a_database_when_starting_then_provider_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.db"
    path.write_bytes(b"definitely not sqlite" * 100)
    provider = SandboxProvider(database_url=db_url(path), events=EventHub())
    with pytest.raises(ProviderUnavailable) as raised:
        await provider.start()
    await provider.aclose()

    assert raised.value.retryable


async def test_given_provider_not_started_when_reading_ledger_then_provider_unavailable(tmp_path: Path) -> None:
    provider = SandboxProvider(database_url=db_url(tmp_path / "sandbox.db"), events=EventHub())
    with pytest.raises(ProviderUnavailable, match="not started"):
        await provider.get_balances(["alice"])
    assert (await provider.get_rewards(["rw_0001"])) == [CATALOG[0]]  # the catalog needs no database
