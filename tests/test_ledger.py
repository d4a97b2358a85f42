"""The points ledger (providers/ledger) against real SQLite files: balances, history, grants, redemptions."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from providers.base import (
    Denomination,
    DenominationKind,
    GiftCard,
    RedeemRequest,
    RedemptionStatus,
    Reward,
    RewardAvailability,
    TransactionKind,
)
from providers.errors import IdempotencyConflict, InsufficientPoints, PointsLimitExceeded, ProviderUnavailable
from providers.ledger import CardCipher, CardUnreadable, PointsLedger, ReserveResult, utcnow
from providers.ledger.store import MAX_POINTS
from providers.sql import create_engine

pytestmark = pytest.mark.anyio

KEY = CardCipher.generate_key()
CARD = GiftCard(
    code="CODE-1234-SECRET",
    pin="9876",
    claim_url="https://claim.example/secret-token",
    expires_at=datetime(2030, 1, 1, tzinfo=UTC),
)
REWARD = Reward(
    id="prod-amazon-us",
    name="Amazon.com Gift Card",
    brand="Amazon",
    description="Shop online",
    category="retail",
    image_url="https://img.example/amazon.png",
    countries=("US",),
    currency_code="USD",
    denomination=Denomination(
        kind=DenominationKind.FIXED,
        face_values=(Decimal("10"), Decimal("25")),
        min_value=Decimal("10"),
        max_value=Decimal("25"),
    ),
    availability=RewardAvailability.AVAILABLE,
    terms="Terms apply",
)


# Helpers (also used by the other test_ledger_* modules)


class Clock:
    """A settable clock: tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


@asynccontextmanager
async def open_ledger(
    path: Path,
    *,
    starting_balance: int = 0,
    keys: list[str] | None = None,
    clock: Callable[[], datetime] = utcnow,
    first_check_delay: float = 0.0,
) -> AsyncIterator[PointsLedger]:
    engine = create_engine(sqlite_url(path), logging_name="ledger")
    ledger = PointsLedger(
        engine,
        CardCipher(keys or [KEY]),
        starting_balance=starting_balance,
        clock=clock,
        first_check_delay=first_check_delay,
    )
    try:
        await ledger.start()
        yield ledger
    finally:
        await engine.dispose()


def request_for(*, user: str = "alice", key: str = "key-1", points: int = 100) -> RedeemRequest:
    return RedeemRequest(
        user_id=user, reward_id=REWARD.id, face_value=Decimal("10"), points=points, idempotency_key=key
    )


async def reserve(
    ledger: PointsLedger, *, user: str = "alice", key: str = "key-1", points: int = 100, fingerprint: str = "fp"
) -> ReserveResult:
    return await ledger.reserve(
        request_for(user=user, key=key, points=points), fingerprint=fingerprint, reference=f"ref{key}", reward=REWARD
    )


def rows(path: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


async def history(ledger: PointsLedger, user: str = "alice", **kwargs: Any) -> list[tuple[str, int, int]]:
    page = await ledger.transactions(user, limit=kwargs.pop("limit", 100), **kwargs)
    return [(tx.kind.value, tx.points, tx.balance_after) for tx in page.items]


# Balances and enrolment


async def test_given_new_users_when_getting_balances_then_each_is_enrolled_with_a_welcome_earn(tmp_path: Path) -> None:
    async with open_ledger(tmp_path / "ledger.db", starting_balance=1000) as ledger:
        balances = await ledger.balances(["bob", "alice", "bob"])
        again = await ledger.balances(["alice"])
        alice = await history(ledger, "alice")

    assert [(b.user_id, b.available, b.pending) for b in balances] == [
        ("bob", 1000, 0),
        ("alice", 1000, 0),
        ("bob", 1000, 0),
    ]
    assert again[0].available == 1000
    assert alice == [("EARN", 1000, 1000)]
    audit = "SELECT description, source FROM ledger_transactions WHERE user_id = 'alice'"
    assert rows(tmp_path / "ledger.db", audit) == [("Welcome bonus", "ledger:enrolment")]


async def test_given_no_starting_balance_when_enrolling_then_zero_and_no_transaction(tmp_path: Path) -> None:
    async with open_ledger(tmp_path / "ledger.db") as ledger:
        [balance] = await ledger.balances(["alice"])
        page = await ledger.transactions("alice", limit=10)

    assert balance.available == 0 and page.items == () and page.total_count == 0
    assert rows(tmp_path / "ledger.db", "SELECT user_id, available FROM ledger_accounts") == [("alice", 0)]


async def test_given_20_concurrent_first_calls_when_enrolling_then_exactly_one_welcome_earn(tmp_path: Path) -> None:
    async with open_ledger(tmp_path / "ledger.db", starting_balance=500) as ledger:
        results = await asyncio.gather(*(ledger.balances(["carol"]) for _ in range(20)))

    assert {result[0].available for result in results} == {500}
    assert rows(tmp_path / "ledger.db", "SELECT count(*) FROM ledger_transactions") == [(1,)]


# Transactions


async def test_given_every_kind_of_movement_then_history_has_each_kind_with_its_balance_after(tmp_path: Path) -> None:
    async with open_ledger(tmp_path / "ledger.db", starting_balance=100) as ledger:
        await ledger.grant("alice", 500, reason="Order #1", source="webhook:loyalty")
        await ledger.grant("alice", -50, reason="Correction", source="cli:ops")
        reserved = await reserve(ledger, points=300)
        await ledger.settle(reserved.redemption.id, status=RedemptionStatus.FAILED, failure_reason="out of stock")
        page = await ledger.transactions("alice", limit=10)
        by_id = await ledger.transactions_by_id([page.items[1].id, "tx_unknown", page.items[0].id])

    assert [(tx.kind.value, tx.points, tx.balance_after) for tx in page.items] == [
        ("REFUND", 300, 550),
        ("REDEEM", -300, 250),
        ("ADJUSTMENT", -50, 550),
        ("EARN", 500, 600),
        ("EARN", 100, 100),
    ]
    assert page.items[0].redemption_id == page.items[1].redemption_id == reserved.redemption.id
    assert by_id == [page.items[1], None, page.items[0]]


async def test_given_history_when_paging_forward_and_backward_then_windows_and_flags_are_right(tmp_path: Path) -> None:
    async with open_ledger(tmp_path / "ledger.db", starting_balance=1000) as ledger:
        for i in range(6):
            await reserve(ledger, key=f"k{i}", points=10 + i)
        everything = await ledger.transactions("alice", limit=100)
        positions = [tx.position for tx in everything.items]  # newest first

        async def window(**kwargs: Any) -> tuple[list[int], int, bool]:
            page = await ledger.transactions("alice", **kwargs)
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


async def test_given_two_users_when_listing_then_each_sees_only_their_own(tmp_path: Path) -> None:
    async with open_ledger(tmp_path / "ledger.db") as ledger:
        await ledger.grant("alice", 10, reason="a", source="cli:ops")
        await ledger.grant("bob", 20, reason="b", source="cli:ops")
        alice = await history(ledger, "alice")
        bob = await history(ledger, "bob")

    assert alice == [("EARN", 10, 10)] and bob == [("EARN", 20, 20)]


# Grants


async def test_given_a_grant_then_source_and_reason_are_stored_with_the_transaction(tmp_path: Path) -> None:
    async with open_ledger(tmp_path / "ledger.db") as ledger:
        result = await ledger.grant("alice", 250, reason="Spring promo", source="cli:ops", event_id=None)

    assert result is not None
    assert (result.transaction.kind, result.transaction.points, result.transaction.balance_after) == (
        TransactionKind.EARN,
        250,
        250,
    )
    assert result.balance.available == 250
    assert rows(
        tmp_path / "ledger.db", "SELECT id, kind, source, reason, description FROM ledger_transactions"
    ) == [(result.transaction.id, "EARN", "cli:ops", "Spring promo", "Spring promo")]
    assert rows(tmp_path / "ledger.db", "SELECT count(*) FROM ledger_grant_events") == [(0,)]


async def test_given_the_same_event_twice_when_granting_then_points_are_granted_once(tmp_path: Path) -> None:
    async with open_ledger(tmp_path / "ledger.db") as ledger:
        first = await ledger.grant("alice", 100, reason="Order #7", source="webhook:loyalty", event_id="evt_1")
        second = await ledger.grant("alice", 100, reason="Order #7", source="webhook:loyalty", event_id="evt_1")
        concurrent = await asyncio.gather(
            *(
                ledger.grant("alice", 5, reason="Order #8", source="webhook:loyalty", event_id="evt_2")
                for _ in range(10)
            )
        )
        other_source = await ledger.grant("alice", 1, reason="x", source="cli:ops", event_id="evt_1")
        [balance] = await ledger.balances(["alice"])

    assert first is not None and second is None and other_source is not None
    assert sum(result is not None for result in concurrent) == 1
    assert balance.available == 100 + 5 + 1
    events = "SELECT source, event_id, transaction_id FROM ledger_grant_events ORDER BY 1, 2"
    assert rows(tmp_path / "ledger.db", events)[:2] == [
        ("cli:ops", "evt_1", other_source.transaction.id),
        ("webhook:loyalty", "evt_1", first.transaction.id),
    ]


async def test_given_a_negative_adjustment_beyond_the_balance_then_insufficient_points_and_nothing_written(
    tmp_path: Path,
) -> None:
    async with open_ledger(tmp_path / "ledger.db") as ledger:
        await ledger.grant("alice", 100, reason="start", source="cli:ops")
        with pytest.raises(InsufficientPoints):
            await ledger.grant("alice", -101, reason="too much", source="cli:ops", event_id="evt_adj")
        retried = await ledger.grant("alice", -100, reason="all of it", source="cli:ops", event_id="evt_adj")
        [balance] = await ledger.balances(["alice"])

    assert retried is not None and retried.transaction.kind is TransactionKind.ADJUSTMENT
    assert retried.transaction.balance_after == 0 == balance.available
    assert rows(tmp_path / "ledger.db", "SELECT kind, points FROM ledger_transactions ORDER BY position") == [
        ("EARN", 100),
        ("ADJUSTMENT", -100),
    ]


async def test_given_a_zero_or_unexplained_grant_then_value_error(tmp_path: Path) -> None:
    async with open_ledger(tmp_path / "ledger.db") as ledger:
        with pytest.raises(ValueError, match="at least one point"):
            await ledger.grant("alice", 0, reason="nothing", source="cli:ops")
        with pytest.raises(ValueError, match="reason"):
            await ledger.grant("alice", 5, reason=" ", source="cli:ops")


# Reserve


async def test_given_enough_points_when_reserving_then_debited_pending_and_recorded(tmp_path: Path) -> None:
    async with open_ledger(tmp_path / "ledger.db", starting_balance=1000) as ledger:
        result = await reserve(ledger, points=300)
        [stored] = await ledger.redemptions_by_id([result.redemption.id])
        snapshot = await ledger.reward_snapshot(result.redemption.id)
        by_reference = await ledger.redemption_by_reference("refkey-1")
        txs = await history(ledger)

    assert not result.replayed
    assert (result.balance.available, result.balance.pending) == (700, 300)
    assert result.redemption.status is RedemptionStatus.PENDING and result.redemption.gift_card is None
    assert (result.redemption.reward_id, result.redemption.face_value, result.redemption.currency_code) == (
        REWARD.id,
        Decimal("10"),
        "USD",
    )
    assert stored == result.redemption == by_reference
    assert snapshot == REWARD
    assert txs == [("REDEEM", -300, 700), ("EARN", 1000, 1000)]
    assert rows(tmp_path / "ledger.db", "SELECT order_reference, idempotency_key, status FROM ledger_redemptions") == [
        ("refkey-1", "key-1", "PENDING")
    ]


async def test_given_the_same_key_and_request_when_reserving_again_then_the_first_result_is_replayed(
    tmp_path: Path,
) -> None:
    async with open_ledger(tmp_path / "ledger.db", starting_balance=1000) as ledger:
        first = await reserve(ledger, points=300)
        again = await reserve(ledger, points=300)

    assert again.replayed and again.redemption == first.redemption
    assert again.balance.available == 700
    assert rows(tmp_path / "ledger.db", "SELECT count(*) FROM ledger_transactions WHERE kind = 'REDEEM'") == [(1,)]


@pytest.mark.parametrize(("user", "fingerprint"), [("alice", "other"), ("bob", "fp")])
async def test_given_a_key_reused_for_another_request_when_reserving_then_conflict_and_nothing_written(
    tmp_path: Path, user: str, fingerprint: str
) -> None:
    async with open_ledger(tmp_path / "ledger.db", starting_balance=1000) as ledger:
        await reserve(ledger, points=300)
        with pytest.raises(IdempotencyConflict):
            await reserve(ledger, user=user, points=200, fingerprint=fingerprint)
        [balance] = await ledger.balances(["alice"])

    assert balance.available == 700
    assert rows(tmp_path / "ledger.db", "SELECT count(*) FROM ledger_redemptions") == [(1,)]
    assert rows(tmp_path / "ledger.db", "SELECT count(*) FROM ledger_transactions WHERE kind = 'REDEEM'") == [(1,)]


async def test_given_a_new_user_with_too_few_points_when_reserving_then_insufficient_and_nothing_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    async with open_ledger(path, starting_balance=100) as ledger:
        with pytest.raises(InsufficientPoints):
            await reserve(ledger, points=101)

    # Not even the enrolment: the whole transaction rolled back.
    for table in ("ledger_accounts", "ledger_transactions", "ledger_redemptions"):
        assert rows(path, f"SELECT count(*) FROM {table}") == [(0,)]  # noqa: S608 - test-owned names


# Settle


async def test_given_fulfilled_when_settling_then_the_card_is_stored_encrypted_and_decrypted_for_reads(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    async with open_ledger(path, starting_balance=1000) as ledger:
        reserved = await reserve(ledger, points=300)
        settled = await ledger.settle(
            reserved.redemption.id, status=RedemptionStatus.FULFILLED, order_id="ORD-1", gift_card=CARD
        )
        [stored] = await ledger.redemptions_by_id([reserved.redemption.id])
        by_reference = await ledger.redemption_by_reference("refkey-1")
        again = await ledger.settle(reserved.redemption.id, status=RedemptionStatus.FAILED)
        [balance] = await ledger.balances(["alice"])

    assert settled is not None and again is None
    assert settled.redemption.status is RedemptionStatus.FULFILLED and settled.redemption.gift_card == CARD
    assert (settled.balance.available, settled.balance.pending) == (700, 0)
    assert stored is not None and stored.gift_card == CARD
    assert by_reference == dataclasses.replace(stored, gift_card=None)  # looked up by reference: never decrypted
    assert balance.available == 700
    [(ciphertext, order_id)] = rows(path, "SELECT card_ciphertext, order_id FROM ledger_redemptions")
    assert order_id == "ORD-1"
    for secret in ("CODE-1234-SECRET", "9876", "secret-token"):
        assert secret not in ciphertext
    assert CardCipher([KEY]).decrypt(ciphertext) == CARD
    assert "CODE-1234" not in repr(stored) and "CODE-1234" not in repr(settled)


async def test_given_failed_when_settling_twice_then_the_points_are_refunded_once(tmp_path: Path) -> None:
    async with open_ledger(tmp_path / "ledger.db", starting_balance=1000) as ledger:
        reserved = await reserve(ledger, points=300)
        results = await asyncio.gather(
            *(
                ledger.settle(reserved.redemption.id, status=RedemptionStatus.FAILED, failure_reason="declined")
                for _ in range(5)
            )
        )
        later = await ledger.settle(reserved.redemption.id, status=RedemptionStatus.FULFILLED, gift_card=CARD)
        [stored] = await ledger.redemptions_by_id([reserved.redemption.id])
        txs = await history(ledger)

    settled = [result for result in results if result is not None]
    assert len(settled) == 1 and later is None
    assert settled[0].balance.available == 1000 and settled[0].balance.pending == 0
    assert stored is not None and stored.status is RedemptionStatus.FAILED
    assert stored.failure_reason == "declined" and stored.gift_card is None
    assert txs == [("REFUND", 300, 1000), ("REDEEM", -300, 700), ("EARN", 1000, 1000)]
    assert rows(tmp_path / "ledger.db", "SELECT card_ciphertext FROM ledger_redemptions") == [(None,)]


async def test_given_pending_when_settling_to_pending_then_value_error(tmp_path: Path) -> None:
    async with open_ledger(tmp_path / "ledger.db", starting_balance=1000) as ledger:
        reserved = await reserve(ledger)
        with pytest.raises(ValueError, match="FULFILLED or FAILED"):
            await ledger.settle(reserved.redemption.id, status=RedemptionStatus.PENDING)


async def test_given_cards_under_an_unknown_key_when_reading_then_a_typed_temporary_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "ledger.db"
    async with open_ledger(path, starting_balance=1000) as ledger:
        reserved = await reserve(ledger)
        await ledger.settle(reserved.redemption.id, status=RedemptionStatus.FULFILLED, gift_card=CARD)
    async with open_ledger(path, keys=[CardCipher.generate_key()]) as rekeyed:
        with pytest.raises(ProviderUnavailable) as raised:
            await rekeyed.redemptions_by_id([reserved.redemption.id])
        [unknown] = await rekeyed.redemptions_by_id(["rd_unknown"])
        # Looking a redemption up by its order reference (webhooks, replays) never needs the card.
        by_reference = await rekeyed.redemption_by_reference("refkey-1")

    assert isinstance(raised.value.__cause__, CardUnreadable)
    assert unknown is None
    assert by_reference is not None and by_reference.id == reserved.redemption.id and by_reference.gift_card is None
    assert "CODE-1234" not in str(raised.value) and "CODE-1234" not in caplog.text
    assert "gift card unreadable" in caplog.text


# The reconciler's queue


async def test_given_pending_redemptions_then_unsettled_lists_them_when_due_and_defer_postpones(
    tmp_path: Path,
) -> None:
    clock = Clock()
    async with open_ledger(tmp_path / "ledger.db", starting_balance=1000, clock=clock, first_check_delay=30) as ledger:
        first = await reserve(ledger, key="k1")
        clock.advance(1)
        second = await reserve(ledger, key="k2")
        not_yet = await ledger.unsettled()
        clock.advance(30)
        due = await ledger.unsettled()
        limited = await ledger.unsettled(limit=1)
        await ledger.mark_ordered(first.redemption.id, "ORD-9")
        await ledger.defer(first.redemption.id, 60)
        after_defer = await ledger.unsettled()
        clock.advance(60)
        again = await ledger.unsettled()
        await ledger.settle(second.redemption.id, status=RedemptionStatus.FULFILLED, gift_card=CARD)
        after_settle = await ledger.unsettled()

    assert not_yet == []
    assert [(u.redemption_id, u.reference, u.attempts, u.order_id) for u in due] == [
        (first.redemption.id, "refk1", 0, None),
        (second.redemption.id, "refk2", 0, None),
    ]
    assert (due[0].user_id, due[0].reward_id, due[0].face_value, due[0].currency_code) == (
        "alice",
        REWARD.id,
        Decimal("10"),
        "USD",
    )
    assert [u.redemption_id for u in limited] == [first.redemption.id]
    assert [u.redemption_id for u in after_defer] == [second.redemption.id]
    assert [(u.redemption_id, u.attempts, u.order_id) for u in again] == [
        (first.redemption.id, 1, "ORD-9"),
        (second.redemption.id, 0, None),
    ]
    assert [u.redemption_id for u in after_settle] == [first.redemption.id]


async def test_given_a_due_redemption_when_two_ledgers_claim_it_then_only_one_gets_it_until_the_lease_ends(
    tmp_path: Path,
) -> None:
    # Two gateway processes sharing the database: only the claimant may ask the provider about it.
    clock = Clock()
    path = tmp_path / "ledger.db"
    async with open_ledger(path, starting_balance=1000, clock=clock) as one, open_ledger(path, clock=clock) as two:
        reserved = await reserve(one)
        claims = await asyncio.gather(*(ledger.claim(reserved.redemption.id, 60) for ledger in (one, two, one, two)))
        due_during_lease = await two.unsettled()
        clock.advance(61)
        due_after_lease = await two.unsettled()
        reclaimed = await two.claim(reserved.redemption.id, 60)
        clock.advance(61)
        await one.settle(reserved.redemption.id, status=RedemptionStatus.FULFILLED, gift_card=CARD)
        settled_claim = await one.claim(reserved.redemption.id, 60)

    assert sorted(claims) == [False, False, False, True]
    assert due_during_lease == []
    assert [u.redemption_id for u in due_after_lease] == [reserved.redemption.id]
    assert reclaimed is True
    assert settled_claim is False


async def test_given_a_balance_near_the_limit_then_grants_stop_at_max_points_and_nothing_is_written(
    tmp_path: Path,
) -> None:
    async with open_ledger(tmp_path / "ledger.db", starting_balance=1000) as ledger:
        await ledger.grant("alice", MAX_POINTS - 1000 - 100, reason="big", source="cli:ops")
        reserved = await reserve(ledger, points=100)  # reserved points count too: a refund must always fit
        with pytest.raises(PointsLimitExceeded):
            await ledger.grant("alice", 101, reason="one too many", source="webhook:loyalty", event_id="evt-1")
        with pytest.raises(PointsLimitExceeded):
            await ledger.grant("bob", 10**20, reason="absurd", source="cli:ops")
        topped_up = await ledger.grant("alice", 100, reason="to the brim", source="webhook:loyalty", event_id="evt-1")
        refunded = await ledger.settle(reserved.redemption.id, status=RedemptionStatus.FAILED, failure_reason="x")
        with pytest.raises(PointsLimitExceeded):
            await ledger.grant("alice", 1, reason="past the brim", source="cli:ops")
        [alice] = await ledger.balances(["alice"])

    # The refused grant rolled back with its event id, so the same event could be granted afterwards.
    assert topped_up is not None and (topped_up.balance.available, topped_up.balance.pending) == (MAX_POINTS - 100, 100)
    assert refunded is not None and refunded.balance.available == MAX_POINTS
    assert (alice.available, alice.pending) == (MAX_POINTS, 0)
    assert rows(tmp_path / "ledger.db", "SELECT count(*) FROM ledger_accounts WHERE user_id = 'bob'") == [(0,)]


async def test_given_unknown_ids_then_lookups_answer_none(tmp_path: Path) -> None:
    async with open_ledger(tmp_path / "ledger.db") as ledger:
        assert await ledger.redemption_by_reference("nope") is None
        assert await ledger.reward_snapshot("rd_nope") is None
        assert await ledger.transactions_by_id(["tx_nope"]) == [None]
        assert repr(ledger) == "PointsLedger(sqlite)"


async def test_given_the_default_first_check_delay_then_a_fresh_reserve_is_due_at_once(tmp_path: Path) -> None:
    # A process that dies right after reserving leaves the order to the next reconciler pass, not to a timer.
    async with open_ledger(tmp_path / "ledger.db", starting_balance=1000, clock=Clock()) as ledger:
        reserved = await reserve(ledger)
        due = await ledger.unsettled()

    assert [u.redemption_id for u in due] == [reserved.redemption.id]
