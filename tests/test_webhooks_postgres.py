"""Webhook redemption states on PostgreSQL: two deliveries about one redemption, from two processes at once,
never leave it further back than the furthest state either brought."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from providers import EventHub, Redemption, RedemptionStatus
from resolvers.webhooks import WebhookService, redemption_states
from tests.test_ledger_postgres import engines  # noqa: F401  (the PostgreSQL fixture)

pytestmark = pytest.mark.anyio

START = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def state(redemption_id: str, status: RedemptionStatus, seconds: int) -> Redemption:
    return Redemption(
        id=redemption_id,
        user_id="alice",
        reward_id="rw_1",
        face_value=Decimal(10),
        currency_code="USD",
        points=1000,
        status=status,
        gift_card=None,
        failure_reason=None,
        created_at=START,
        updated_at=START + timedelta(seconds=seconds),
    )


async def advance(service: WebhookService, redemption: Redemption) -> bool:
    async with service._write() as conn:  # the transaction handle() runs it in
        return await service._advance(conn, redemption)


async def test_given_a_settlement_and_a_late_pending_at_once_then_the_settlement_stands(
    engines: Callable[[], AsyncEngine],  # noqa: F811
) -> None:
    none: Any = None  # the provider and catalog are not used by the state bookkeeping
    services = [WebhookService(engines(), none, EventHub(), none) for _ in range(2)]
    await services[0].start()
    for round_ in range(10):
        rid = f"rd_{round_}"
        await advance(services[0], state(rid, RedemptionStatus.PENDING, 0))
        fulfilled, late_pending = state(rid, RedemptionStatus.FULFILLED, 10), state(rid, RedemptionStatus.PENDING, 5)

        await asyncio.gather(advance(services[0], fulfilled), advance(services[1], late_pending))

        async with services[1]._engine.connect() as conn:
            stored = (
                await conn.execute(select(redemption_states).where(redemption_states.c.redemption_id == rid))
            ).one()
        assert stored.status == "FULFILLED", f"round {round_}: a late PENDING undid the settlement"
