"""The Subscription root: the viewer's balance and redemptions, live."""

from __future__ import annotations

from collections.abc import AsyncGenerator

import strawberry
from strawberry.types import Info

from providers import BalanceChanged, RedemptionUpdated
from providers.errors import ProviderError
from resolvers.context import RequestContext
from resolvers.errors import ProviderDown
from schema.types import PointBalance, Redemption


@strawberry.type
class Subscription:
    @strawberry.subscription(description="The viewer's balance: first the current one, then one per change.")
    async def balance_changed(self, info: Info[RequestContext, None]) -> AsyncGenerator[PointBalance, None]:
        ctx = info.context
        user_id = ctx.require_user()
        # Subscribe before reading, so a change between the two is not missed.
        async with ctx.services.events.subscribe(user_id) as queue:
            try:
                (current,) = await ctx.services.provider.get_balances([user_id])
            except ProviderError as exc:
                raise ProviderDown("The reward provider is temporarily unavailable.") from exc
            yield PointBalance.from_domain(current)
            while True:
                event = await queue.get()
                if not isinstance(event, BalanceChanged):
                    continue
                # Events queued before the first read may be older than it: never go back in time.
                if event.balance != current and event.balance.updated_at >= current.updated_at:
                    current = event.balance
                    yield PointBalance.from_domain(current)

    @strawberry.subscription(description="The viewer's redemptions, on every status change.")
    async def redemption_updated(self, info: Info[RequestContext, None]) -> AsyncGenerator[Redemption, None]:
        ctx = info.context
        user_id = ctx.require_user()
        # Events reach the hub from several paths (the redeem answer, provider webhooks, the
        # reconciler) in any order; the hub passes on only those that move a redemption forward.
        async with ctx.services.events.subscribe(user_id) as queue:
            while True:
                event = await queue.get()
                if not isinstance(event, RedemptionUpdated):
                    continue
                ctx.reset_loaders()  # the connection lives long; resolve the reward afresh
                yield Redemption.from_domain(event.redemption)
