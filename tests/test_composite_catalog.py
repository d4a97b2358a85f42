"""The composite provider's own copy of the seller's catalog: a change announced during a read is not lost.

The seller here is a stand-in at the FulfilmentProvider port (the composite's provider boundary) whose
catalog read can be held on an event, so the interleaving is exact rather than timed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from pathlib import Path

import pytest

from providers import EventHub, Reward, RewardAvailability
from providers.composite import LedgerProvider
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

    async def funding_balance(self) -> FundingBalance:
        raise NotImplementedError

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
