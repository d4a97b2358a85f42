"""The composite provider's caches of the seller: the catalog (a change announced during a read is not lost)
and the company account's funding balance (one read at a time, failures remembered briefly).

The seller here is a stand-in at the FulfilmentProvider port (the composite's provider boundary) whose
reads can be held on an event, so the interleavings are exact rather than timed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path

import pytest

from providers import EventHub, RedeemRequest, Reward, RewardAvailability
from providers.composite import LedgerProvider
from providers.errors import ProviderUnavailable
from providers.fulfilment import FulfilmentEvent, FundingBalance, Order, OrderEvent, OrderRequest
from tests.test_ledger import REWARD, open_ledger

pytestmark = pytest.mark.anyio


class HeldSeller:
    """Answers catalog reads with its current rewards, taken when the read starts; `hold` parks the next one."""

    name = "held"

    def __init__(self, rewards: list[Reward]) -> None:
        self.rewards = rewards
        self.reads = 0
        self.hold: asyncio.Event | None = None
        self.reading = asyncio.Event()

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def catalog(self) -> list[Reward]:
        self.reads += 1
        snapshot = list(self.rewards)
        self.reading.set()
        if self.hold is not None:
            await self.hold.wait()
        return snapshot

    funding = FundingBalance(available=Decimal(5), currency_code="USD")  # less than REWARD's 10 USD
    funding_reads = 0
    funding_fails = False

    async def funding_balance(self) -> FundingBalance:
        self.funding_reads += 1
        await asyncio.sleep(0.01)  # a round trip: concurrent callers overlap
        if self.funding_fails:
            raise ProviderUnavailable("the seller is down", provider=self.name)
        return self.funding

    async def place_order(self, request: OrderRequest) -> Order:
        raise NotImplementedError

    async def find_order(self, reference: str) -> Order | None:
        raise NotImplementedError

    async def order_for_event(self, event: OrderEvent) -> Order | None:
        raise NotImplementedError

    def verify_webhook(self, headers: Mapping[str, str], body: bytes) -> list[FulfilmentEvent]:
        raise NotImplementedError


async def test_given_a_catalog_read_under_way_when_a_change_is_announced_then_the_next_read_asks_again(
    tmp_path: Path,
) -> None:
    seller = HeldSeller([REWARD])
    async with open_ledger(tmp_path / "ledger.db") as ledger:
        provider = LedgerProvider(ledger=ledger, fulfilment=seller, events=EventHub())  # type: ignore[arg-type]
        seller.hold = asyncio.Event()
        under_way = asyncio.create_task(provider.get_rewards([REWARD.id]))
        await seller.reading.wait()  # the read has taken the old catalog and waits
        seller.rewards = [dataclasses.replace(REWARD, availability=RewardAvailability.OUT_OF_STOCK)]
        provider.invalidate_catalog()  # the seller's webhook announces the change
        seller.hold.set()
        [during] = await under_way
        seller.hold = None
        [after] = await provider.get_rewards([REWARD.id])
        [cached] = await provider.get_rewards([REWARD.id])

    assert during is not None and during.availability is RewardAvailability.AVAILABLE  # the read it joined
    assert after is not None and after.availability is RewardAvailability.OUT_OF_STOCK
    assert cached == after and seller.reads == 2  # then trusted for the TTL again


def redeem_request(key: str) -> RedeemRequest:
    return RedeemRequest(user_id="alice", reward_id=REWARD.id, face_value=Decimal(10), points=1000, idempotency_key=key)


async def test_given_a_short_company_account_when_many_redeem_at_once_then_the_seller_is_asked_once(
    tmp_path: Path,
) -> None:
    seller = HeldSeller([REWARD])
    now = [1000.0]
    async with open_ledger(tmp_path / "ledger.db", starting_balance=5000) as ledger:
        provider = LedgerProvider(ledger=ledger, fulfilment=seller, events=EventHub(), clock=lambda: now[0])  # type: ignore[arg-type]
        refused = await asyncio.gather(
            *(provider.redeem(redeem_request(f"k{n}")) for n in range(20)), return_exceptions=True
        )
        reads_for_the_burst = seller.funding_reads
        now[0] += 2  # past funding_recheck: a refused redemption asks again, once
        seller.funding_fails = True
        failing = await asyncio.gather(
            *(provider.redeem(redeem_request(f"f{n}")) for n in range(10)), return_exceptions=True
        )
        now[0] += 2  # within funding_failure_ttl of the failure: answered from memory
        remembered = await asyncio.gather(
            *(provider.redeem(redeem_request(f"r{n}")) for n in range(10)), return_exceptions=True
        )
        [balance] = await ledger.balances(["alice"])

    assert all(isinstance(outcome, ProviderUnavailable) for outcome in refused + failing + remembered)
    assert reads_for_the_burst == 1
    assert seller.funding_reads == 2  # the burst's read, then one for the failing seller, remembered after
    assert (balance.available, balance.pending) == (5000, 0)  # nothing was ever reserved
