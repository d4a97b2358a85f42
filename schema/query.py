"""The Query root: catalog, viewer and Relay node refetching."""

from __future__ import annotations

import asyncio

import strawberry
from strawberry.types import Info

import providers
from resolvers.catalog import CatalogFilter as CatalogQuery
from resolvers.catalog import page_catalog
from resolvers.context import RequestContext
from resolvers.history import page_history
from schema.resolve import load_node, reward_connection, transaction_connection
from schema.types import (
    CatalogFilter,
    CatalogSort,
    KindsArg,
    Node,
    PointBalance,
    RewardConnection,
    TransactionConnection,
)

Ctx = Info[RequestContext, None]


@strawberry.type(description="The signed-in user.")
class Viewer:
    user_id: str

    @strawberry.field
    async def balance(self, info: Ctx) -> PointBalance:
        return PointBalance.from_domain(await info.context.loaders.balances.load(self.user_id))

    @strawberry.field(description="Newest first.")
    async def history(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        kinds: KindsArg = None,
    ) -> TransactionConnection:
        page = await page_history(
            info.context.services.provider,
            self.user_id,
            first=first,
            after=after,
            last=last,
            before=before,
            kinds=None if kinds is None else frozenset(providers.TransactionKind(k.value) for k in kinds),
        )
        return transaction_connection(page)


def _catalog_query(f: CatalogFilter | None) -> CatalogQuery:
    if f is None:
        return CatalogQuery()
    return CatalogQuery(
        search=f.search or None,
        category=f.category,
        brand=f.brand,
        country=f.country,
        currency_code=f.currency_code,
        availability=None
        if f.availability is None
        else frozenset(providers.RewardAvailability(a.value) for a in f.availability),
        max_point_cost=f.max_point_cost,
    )


@strawberry.type
class Query:
    @strawberry.field(description="Refetch any object by its global id.")
    async def node(self, info: Ctx, id: strawberry.ID) -> Node | None:
        return await load_node(info.context, id)

    @strawberry.field(description="Refetch objects by global id, in order; null where not visible.")
    async def nodes(self, info: Ctx, ids: list[strawberry.ID]) -> list[Node | None]:
        return list(await asyncio.gather(*(load_node(info.context, gid) for gid in ids)))

    @strawberry.field(description="The reward catalog, filtered and sorted, in Relay pages.")
    async def catalog(
        self,
        info: Ctx,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
        filter: CatalogFilter | None = None,
        sort: CatalogSort | None = CatalogSort.NAME,
    ) -> RewardConnection:
        snapshot = await info.context.services.catalog.get()
        page = page_catalog(
            snapshot,
            first=first,
            after=after,
            last=last,
            before=before,
            filter=_catalog_query(filter),
            sort=(sort or CatalogSort.NAME).value,
        )
        return reward_connection(page, snapshot)

    @strawberry.field(description="The signed-in user; needs a bearer token.")
    def viewer(self, info: Ctx) -> Viewer:
        return Viewer(user_id=info.context.require_user())
