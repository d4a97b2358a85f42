"""Thin glue from GraphQL arguments to resolver logic, and from domain objects to types."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from resolvers.catalog_cache import CatalogSnapshot
from resolvers.context import RequestContext
from resolvers.ids import decode_global_id
from resolvers.pagination import Page
from schema.types import (
    Connection,
    Edge,
    Node,
    PageInfo,
    Redemption,
    Reward,
    Transaction,
)

T = TypeVar("T")
N = TypeVar("N")


async def load_reward(ctx: RequestContext, reward_id: str) -> Reward | None:
    reward = await ctx.loaders.rewards.load(reward_id)
    if reward is None:
        return None
    cost = ctx.services.pricing.point_cost(reward)
    return None if cost is None else Reward.from_domain(reward, cost)


async def load_node(ctx: RequestContext, global_id: str) -> Node | None:
    """Any Node by global id; objects of another user (or of no user) are None."""
    type_name, raw_id = decode_global_id(global_id)
    if type_name == "Reward":
        return await load_reward(ctx, raw_id)
    if ctx.user_id is None:
        return None
    if type_name == "Redemption":
        redemption = await ctx.loaders.redemptions.load(raw_id)
        if redemption is None or redemption.user_id != ctx.user_id:
            return None
        return Redemption.from_domain(redemption)
    transaction = await ctx.loaders.transactions.load(raw_id)
    if transaction is None or transaction.user_id != ctx.user_id:
        return None
    return Transaction.from_domain(transaction)


def page_info(page: Page) -> PageInfo:
    return PageInfo(
        has_next_page=page.has_next_page,
        has_previous_page=page.has_previous_page,
        start_cursor=page.cursors[0] if page.cursors else None,
        end_cursor=page.cursors[-1] if page.cursors else None,
    )


def connection(page: Page, node: Callable[[T], N]) -> Connection[N]:
    return Connection(
        edges=[Edge(cursor=cursor, node=node(item)) for item, cursor in zip(page.items, page.cursors, strict=True)],
        page_info=page_info(page),
        total_count=page.total_count,
    )


def reward_connection(page: Page, snapshot: CatalogSnapshot) -> Connection[Reward]:
    # Reward objects are immutable and the same for every viewer: the snapshot keeps them.
    build = Reward.from_domain
    return connection(page, lambda reward: snapshot.view(reward, build))


def transaction_connection(page: Page) -> Connection[Transaction]:
    return connection(page, Transaction.from_domain)
